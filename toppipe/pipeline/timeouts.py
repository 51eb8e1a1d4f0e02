"""A task's body under its timeout (``@task(timeout=seconds)``), on the worker that runs it.

Without a timeout the body runs in the calling thread, as before (no cost). With one
it runs in a thread of its own, which the calling thread (dask's worker thread, or a
local run's) waits for. Past the timeout the caller raises :class:`TaskTimeout` (an
attempt that failed: ``retries=`` and ``on_error`` apply) and the worker thread is free
again. Python cannot kill a thread, so the body's thread is asked to stop: a
:class:`Abandoned` exception is raised inside it at its next Python instruction, which
ends a Python loop at once and runs its ``finally`` blocks; a body waiting in C (a
``sleep``, a socket, a long numpy call) runs on until that call returns. Whatever it
returns or raises after its timeout is dropped, never cached nor passed on, and the
thread then ends.
"""

from __future__ import annotations

import contextvars
import ctypes
import os
import sys
import threading
import traceback
from typing import Any, Callable


class TaskTimeout(Exception):
    """A task's body ran past its timeout; *stack* is where it was then."""

    def __init__(self, message: str, stack: str = ""):
        super().__init__(message, stack)
        self.stack = stack

    def __str__(self) -> str:
        return self.args[0]


class Abandoned(BaseException):
    """Raised inside a body past its timeout (a BaseException: ``except Exception`` in the task does not stop it)."""


def describe(seconds: float) -> str:
    """``2 s``, ``0.5 s``: the timeout as the user wrote it."""
    return f"{seconds:g} s"


def call_within(body: Callable[[], Any], seconds: float | None, task: str) -> Any:
    """``body()``, raising TaskTimeout (naming *task* and the timeout) if it runs longer than *seconds*."""
    if seconds is None:
        return body()
    outcome: dict[str, Any] = {}
    finished = threading.Event()
    context = contextvars.copy_context()  # dask's get_worker() and the like, as in the calling thread
    worker_state = _thread_state()
    given = dict(vars(worker_state)) if worker_state is not None else {}

    def run() -> None:
        if worker_state is not None:
            vars(worker_state).update(given)
        try:
            outcome["value"] = context.run(body)
        except BaseException as error:  # noqa: BLE001 - handed to the waiting thread (dropped past the timeout)
            outcome["error"] = error
        finally:
            finished.set()  # a late outcome goes with this thread: nothing else holds it

    thread = threading.Thread(target=run, name=f"toppipe-task-{task}", daemon=True)
    thread.start()
    if not finished.wait(seconds):
        stack = _stack_of(thread)
        _interrupt(thread)
        raise TaskTimeout(f"task {task} ran longer than its timeout of {describe(seconds)}; it was told to stop and"
                          " a result it makes later is dropped", stack)  # fmt: skip
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _thread_state():
    """dask's per-thread worker state (the running key), if distributed is loaded."""
    worker = sys.modules.get("distributed.worker")
    return getattr(worker, "thread_state", None)


#: Frames above the task's own: this package's (the body's wrapper) and the thread's start.
_OURS = (os.path.dirname(os.path.abspath(__file__)) + os.sep, threading.__file__)


def _stack_of(thread: threading.Thread) -> str:
    """Where *thread* is now, from the task's own frame on."""
    frame = sys._current_frames().get(thread.ident)
    if frame is None:
        return ""
    frames = traceback.extract_stack(frame)
    while frames and (frames[0].filename.startswith(_OURS[0]) or frames[0].filename == _OURS[1]):
        frames.pop(0)
    return "Where the task was when its timeout passed (most recent call last):\n" + "".join(traceback.format_list(frames))


def _interrupt(thread: threading.Thread) -> None:
    """Raise Abandoned inside *thread* at its next Python instruction."""
    if thread.ident is not None and thread.is_alive():
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(Abandoned))
