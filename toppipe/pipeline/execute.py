"""What runs on a worker for one task of a run: the result cache, the user's
project code, and the events the site agent records.

A task's result is kept under ``<results>/<key[:2]>/<key>.pkl`` (the shared
filesystem on sites that have one), where the key hashes the task's code, its
params and its inputs' keys (:func:`toppipe.pipeline.runs.cache_keys`): the
same key means the same result, so it is loaded instead of computed, unless
the run says ``force``. The user's project folder (kept in sync by lsyncd) is
put on ``sys.path``, and modules of it that changed on disk since they were
imported are reloaded first, so an edited helper takes effect at the next
run without restarting a worker.
"""

from __future__ import annotations

import importlib
import os
import socket
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TaskCall:
    """Everything a worker needs to run one task of one run."""

    run: str
    task: str
    payload: bytes  # the task's function, cloudpickled: opened only once the project is on sys.path
    key: str
    params: dict[str, Any] = field(default_factory=dict)
    results: str | None = None
    project: str | None = None
    force: bool = False
    source: tuple[str, str] | None = None  # (file, text) the function was defined in, for its traceback


def source_of(func) -> tuple[str, str] | None:
    """Where *func* was written and its own lines (blank lines above keep the numbers right), as
    the client sees them: small enough to travel with every task, unlike the whole file."""
    import inspect

    code = getattr(func, "__code__", None)
    try:
        lines, first = inspect.getsourcelines(func)
    except (OSError, TypeError):
        return None
    return (code.co_filename, "\n" * max(first - 1, 0) + "".join(lines))


def remote_traceback(error: BaseException, source: tuple[str, str] | None) -> str:
    """The traceback from the task's own frame on, with the lines of the file it came from.

    cloudpickle names the file of every function it sends by value
    ``<dynamic-code>``: the client's text is shown under the client's file name.
    """
    import linecache

    marker = "<dynamic-code>"
    if source is not None:
        linecache.cache[marker] = (len(source[1]), None, source[1].splitlines(keepends=True), marker)
    tb = error.__traceback__.tb_next if error.__traceback__ is not None else None  # from the task's frame on
    text = "".join(traceback.format_exception(type(error), error, tb))
    return text.replace(f'File "{marker}"', f'File "{source[0]}"') if source is not None else text


class TaskFailed(Exception):
    """A task raised: its name, where it ran, and the remote traceback."""

    def __init__(self, run: str, task: str, host: str, slurm_job: str | None, error: str, remote_traceback: str):
        super().__init__(run, task, host, slurm_job, error, remote_traceback)
        self.run, self.task, self.host, self.slurm_job = run, task, host, slurm_job
        self.error, self.remote_traceback = error, remote_traceback

    def __str__(self) -> str:
        where = self.host + (f", Slurm job {self.slurm_job}" if self.slurm_job else "")
        return f"task {self.task} failed on {where}: {self.error}\n--- remote traceback ---\n{self.remote_traceback}"


_project: str | None = None


def project_path(*parts: str) -> str:
    """A path in the user's project as the running task sees it (the synced copy on
    workers, the folder itself on the client); relative to the working folder outside a run."""
    return os.path.join(_project or os.getcwd(), *parts)


def result_path(results: str, key: str) -> str:
    return os.path.join(results, key[:2], f"{key}.pkl")


def _event(call: TaskCall, state: str, **extra) -> None:
    """Tell the site agent (through the scheduler's event log); silently nothing outside a worker."""
    message = {"run": call.run, "task": call.task, "state": state, "time": time.time(), **extra}
    try:
        from distributed import get_worker

        get_worker().log_event("toppipe-task", message)
    except ValueError:  # not on a worker: a local run
        pass


_imported_at: dict[str, int] = {}
#: The loader's module names (toppipe.pipeline.loader.module_name_for): not importable, never reloaded.
PIPELINE_MODULES = "toppipe_pipeline_"


class _ProjectModules:
    """Which loaded modules come from the project, kept up to date cheaply: resolving the
    paths of a thousand modules for every task would cost more than most tasks."""

    def __init__(self):
        self.root: str | None = None
        self.files: dict[str, tuple[object, str]] = {}  # name -> (module, file) for project modules
        self.looked_at: dict[str, object] = {}  # name -> module, for every module judged

    def __call__(self, project: str):
        """(name, module, file mtime) of the loaded modules whose file is in *project*."""
        root = os.path.realpath(project) + os.sep
        if root != self.root:
            self.root, self.files, self.looked_at = root, {}, {}
        if len(self.looked_at) != len(sys.modules):
            for name, module in list(sys.modules.items()):
                if name in self.looked_at and self.looked_at[name] is module:  # (sys.modules may hold None)
                    continue
                self.looked_at[name] = module
                path = getattr(module, "__file__", None)
                real = os.path.realpath(path) if path else ""
                if real.startswith(root) and not name.startswith(PIPELINE_MODULES) and not real.startswith(_ENVIRONMENT):
                    self.files[name] = (module, path)  # pipeline files are never imported here
                else:
                    self.files.pop(name, None)
            self.looked_at = {n: m for n, m in self.looked_at.items() if n in sys.modules}
        for name, (module, path) in list(self.files.items()):
            try:
                yield name, module, os.stat(path).st_mtime_ns
            except OSError:
                continue


#: Installed packages are never the project's, even when the environment lives inside it (.venv).
_ENVIRONMENT = tuple({os.path.realpath(p) + os.sep for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)})
_project_modules = _ProjectModules()
_project_mtime: dict[str, int] = {}


def remember_project_modules(project: str | None) -> None:
    """Note the file times of project modules imported since the last look (about when they were imported)."""
    if project and os.path.isdir(project):
        for name, _, mtime in _project_modules(project):
            _imported_at.setdefault(name, mtime)


def refresh_project(project: str | None) -> list[str]:
    """Put *project* on ``sys.path`` and reload its modules whose file changed; their names."""
    if not project or not os.path.isdir(project):
        return []
    if project not in sys.path:
        sys.path.insert(0, project)
    stamp = os.stat(project).st_mtime_ns
    if _project_mtime.get(project) != stamp:  # a file was added or removed: let imports look again
        importlib.invalidate_caches()
        _project_mtime[project] = stamp
    reloaded = []
    for name, module, mtime in _project_modules(project):
        if _imported_at.setdefault(name, mtime) < mtime:
            importlib.reload(module)
            _imported_at[name] = mtime
            reloaded.append(name)
    return reloaded


def _load(path: str):
    import cloudpickle

    with open(path, "rb") as handle:
        return cloudpickle.load(handle)


def _store(path: str, value) -> None:
    """Write *value* whole or not at all (a temporary file renamed into place)."""
    import cloudpickle

    os.makedirs(os.path.dirname(path), exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        with os.fdopen(handle, "wb") as out:
            cloudpickle.dump(value, out)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def run_task(call: TaskCall, **inputs):
    """Run one task (or load its cached result); inputs arrive as keyword arguments."""
    global _project
    _project = call.project
    host, job = socket.gethostname(), os.environ.get("SLURM_JOB_ID") or None
    _event(call, "running", host=host, slurm_job=job)
    path = result_path(call.results, call.key) if call.results else None
    refresh_project(call.project)
    if path and not call.force and os.path.exists(path):
        value = _load(path)
        _event(call, "cached")
        return value
    try:
        import cloudpickle

        value = cloudpickle.loads(call.payload)(**inputs, **call.params)
    except Exception as error:
        text = remote_traceback(error, call.source)
        message = f"{type(error).__name__}: {error}"
        _event(call, "failed", error=message, traceback=text)
        raise TaskFailed(call.run, call.task, host, job, message, text) from None
    finally:
        remember_project_modules(call.project)
    if path:
        _store(path, value)
    _event(call, "done")
    return value
