"""What runs on a worker for one task of a run: the result cache, the user's
project code, and the events the site agent records.

A task's result is looked up in the cache (:mod:`toppipe.pipeline.cache`) by
its key (code, project modules, params: made on the client) and its inputs'
result keys, and is valid while every file it read still has its digest
(:mod:`toppipe.pipeline.reads`). Else it is computed, once the synced copies of
the project modules it uses are the versions its key names
(:mod:`toppipe.pipeline.sources`), and kept under a result key that names what
it was computed from. The user's project folder (kept in sync by lsyncd) is
put on ``sys.path``; modules of it that changed since they were imported are
reloaded first, so an edited helper takes effect at the next run without
restarting a worker.
"""

from __future__ import annotations

import importlib
import os
import reprlib
import socket
import sys
import time
import traceback
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from toppipe.pipeline import cache, reads, sources, timeouts


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
    uses: tuple[sources.ModuleUse, ...] = ()  # the project modules in the key, dependencies first
    retries: int = 0  # runs again (recorded as another attempt) up to this many times when it raises
    on_error: str = "fail"  # or "continue": a failed element of a map is left out (see fanout)
    timeout: float | None = None  # seconds an attempt may run (see timeouts)
    map: str | None = None  # the input a map's element takes one element of (shown first when it fails)


@dataclass(frozen=True)
class TaskResult:
    """A task's value with its result key, which the tasks after it put in their own."""

    value: Any
    key: str


def source_of(func) -> tuple[str, str] | None:
    """Where *func* was written and its own lines (blank lines above keep the numbers right), as
    the client sees them: small enough to travel with every task, unlike the whole file. Read once
    per code object (the functions a factory makes share theirs)."""
    import inspect

    code = getattr(func, "__code__", None)
    shared = code is not None and not hasattr(func, "__wrapped__")  # (inspect shows the wrapped function's)
    if shared and code in _SOURCES:
        return _SOURCES[code]
    try:
        lines, first = inspect.getsourcelines(func)
    except (OSError, TypeError):
        found = None
    else:
        found = (code.co_filename, "\n" * max(first - 1, 0) + "".join(lines))
    if shared:
        _SOURCES[code] = found
    return found


_SOURCES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def remote_traceback(error: BaseException, source: tuple[str, str] | None) -> str:
    """The traceback from the task's own frame on, with the lines of the file it came from.

    cloudpickle names the file of every function it sends by value
    ``<dynamic-code>``: the client's text is shown under the client's file name.
    """
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE):  # from the task's frame on
        tb = tb.tb_next
    _show_source(source)
    return _client_names("".join(traceback.format_exception(type(error), error, tb)), source)


_MARKER = "<dynamic-code>"
#: Frames of this package (run_task, the timeout's wrapper) come before the task's own.
_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _show_source(source: tuple[str, str] | None) -> None:
    """Let tracebacks read the lines of a function sent by value (file ``<dynamic-code>``)."""
    import linecache

    if source is not None:
        linecache.cache[_MARKER] = (len(source[1]), None, source[1].splitlines(keepends=True), _MARKER)


def _client_names(text: str, source: tuple[str, str] | None) -> str:
    """*text* (a traceback) with the client's file name for ``<dynamic-code>``."""
    return text.replace(f'File "{_MARKER}"', f'File "{source[0]}"') if source is not None else text


#: The most characters a failed task's inputs are shown with (records, ``run.failed()``).
INPUT_LIMIT = 200
_short = reprlib.Repr()
_short.maxstring = _short.maxother = 80
_short.maxlist = _short.maxtuple = _short.maxset = _short.maxdict = 8
_short.maxlevel = 3


def short_inputs(values: dict[str, Any], params: dict[str, Any], first: str | None = None) -> str:
    """``name=value, ...``: *first* (a map's element) then the other inputs and params, each value
    shortened by :mod:`reprlib` and the whole at most INPUT_LIMIT characters."""
    parts = []
    for name, value in sorted({**values, **params}.items(), key=lambda item: item[0] != first):
        parts.append(f"{name}={_short.repr(value)}")  # (a __repr__ that raises shows as <Type instance at ...>)
    joined = ", ".join(parts)
    return joined if len(joined) <= INPUT_LIMIT else joined[: INPUT_LIMIT - 3] + "..."


class TaskFailed(Exception):
    """A task raised: its name, where it ran, the remote traceback, and its inputs (shortened)."""

    def __init__(self, run: str, task: str, host: str, slurm_job: str | None, error: str, remote_traceback: str,
                 inputs: str | None = None):  # fmt: skip
        super().__init__(run, task, host, slurm_job, error, remote_traceback, inputs)
        self.run, self.task, self.host, self.slurm_job = run, task, host, slurm_job
        self.error, self.remote_traceback, self.inputs = error, remote_traceback, inputs

    def __str__(self) -> str:
        where = self.host + (f", Slurm job {self.slurm_job}" if self.slurm_job else "")
        given = f"\ninputs: {self.inputs}" if self.inputs else ""
        return f"task {self.task} failed on {where}: {self.error}{given}\n--- remote traceback ---\n{self.remote_traceback}"


_project: str | None = None


def project_path(*parts: str) -> str:
    """A path in the user's project as the running task sees it (the synced copy on
    workers, the folder itself on the client); relative to the working folder outside a run.
    Inside a task, what it names counts as read (:func:`toppipe.pipeline.reads.track`)."""
    path = os.path.join(_project or os.getcwd(), *parts)
    if parts and not any(c in path for c in "*?["):
        reads.track(path)
    return path


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
PIPELINE_MODULES = sources.PIPELINE_MODULES


class _ProjectModules:
    """Which loaded modules come from the project, kept up to date cheaply: resolving the
    paths of a thousand modules for every task would cost more than most tasks."""

    def __init__(self):
        self.project: str | None = None
        self.root: str | None = None
        self.files: dict[str, tuple[object, str]] = {}  # name -> (module, file) for project modules
        self.looked_at: dict[str, object] = {}  # name -> module, for every module judged

    def __call__(self, project: str) -> list[tuple[str, object, str]]:
        """(name, module, file) of the loaded modules whose file is in *project*."""
        if project != self.project:
            self.project, root = project, os.path.realpath(project) + os.sep
            if root != self.root:
                self.root, self.files, self.looked_at = root, {}, {}
        root = self.root
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
        return [(name, module, path) for name, (module, path) in self.files.items()]


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


#: Installed packages are never the project's, even when the environment lives inside it (.venv).
_ENVIRONMENT = tuple({os.path.realpath(p) + os.sep for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)})
_project_modules = _ProjectModules()
_project_mtime: dict[str, int] = {}


def remember_project_modules(project: str | None) -> None:
    """Note the file times of project modules imported since the last look (about when they were imported)."""
    if project and os.path.isdir(project):
        for name, _, path in _project_modules(project):
            if name not in _imported_at and (mtime := _mtime(path)) is not None:
                _imported_at[name] = mtime


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
    for name, module, path in _project_modules(project):
        mtime = _mtime(path)
        if mtime is not None and _imported_at.setdefault(name, mtime) < mtime:
            importlib.reload(module)
            _imported_at[name] = mtime
            reloaded.append(name)
    return reloaded


#: The last runs whose project this process refreshed: once per run is enough, since a run's
#: tasks wait for the versions of the modules their keys name (sources.sync_modules) anyway.
_refreshed_runs: OrderedDict[str, None] = OrderedDict()


def refresh_for_run(call: TaskCall) -> None:
    """:func:`refresh_project` at the first task of *call*'s run in this process."""
    if call.run in _refreshed_runs:
        return
    refresh_project(call.project)
    _refreshed_runs[call.run] = None
    while len(_refreshed_runs) > 16:
        _refreshed_runs.popitem(last=False)


def cached(call: TaskCall, snapshot: reads.Snapshot | None, input_keys: dict[str, str]) -> TaskResult | None:
    """The kept result of *call* from these inputs, recorded ``cached``; None if there is none (or force)."""
    if not call.results or call.force:
        return None
    hit = cache.lookup(call.results, call.key, input_keys, lambda read: reads.still_valid(read, call.project, snapshot))
    if hit is None:
        return None
    _event(call, "cached", result_key=hit[0])
    return TaskResult(hit[1], hit[0])


def worker_place() -> dict:
    """The pool of the worker running this task and, in a Slurm job, its partition (for the records)."""
    try:
        from distributed import get_worker

        resources = get_worker().state.total_resources
    except ValueError:  # not on a dask worker (a run on="local")
        resources = {}
    pool = next((name.removeprefix("pool:") for name in resources if name.startswith("pool:")), None)
    return {"pool": pool, "partition": os.environ.get("SLURM_JOB_PARTITION") or None}


def run_task(call: TaskCall, snapshot: reads.Snapshot | None = None, **inputs) -> TaskResult:
    """Run one task (or load its cached result); inputs arrive as keyword arguments (TaskResults).

    *snapshot* is the client's project at the start of the run, where workers see a synced copy.
    """
    global _project
    _project = call.project
    host, job = socket.gethostname(), os.environ.get("SLURM_JOB_ID") or None
    _event(call, "running", host=host, slurm_job=job, **worker_place())
    values = {name: found.value for name, found in inputs.items()}
    input_keys = {name: found.key for name, found in inputs.items()}
    refresh_for_run(call)
    hit = cached(call, snapshot, input_keys)
    if hit is not None:
        return hit
    untracked = (call.results,) if call.results else ()
    if call.timeout is not None:
        _show_source(call.source)  # a timed-out body's stack shows its lines
    for attempt in range(call.retries + 1):
        try:
            sources.sync_modules(call.uses, call.project)
            import cloudpickle

            func = cloudpickle.loads(call.payload)

            def body(func=func):
                with reads.tracking(call.project, snapshot, untracked) as reading:
                    return func(**values, **call.params), reading

            value, seen = timeouts.call_within(body, call.timeout, call.task)
            break
        except Exception as error:
            if isinstance(error, reads.OutOfSync):
                text, message = "", str(error)
            elif isinstance(error, timeouts.TaskTimeout):
                text, message = _client_names(error.stack, call.source), f"TaskTimeout: {error}"
            else:
                text, message = remote_traceback(error, call.source), f"{type(error).__name__}: {error}"
            if attempt == call.retries or isinstance(error, reads.OutOfSync):
                given = short_inputs(values, call.params, call.map)
                _event(call, "failed", error=message, traceback=text, inputs=given)
                raise TaskFailed(call.run, call.task, host, job, message, text, given) from None
            _event(call, "running", host=host, slurm_job=job, retry=attempt + 1, error=message)  # another attempt
        finally:
            remember_project_modules(call.project)
    manifest = seen.manifest()
    if call.results and manifest is not None:
        found = cache.store(call.results, call.key, input_keys, manifest, value)
    else:  # not kept: a file it read changed while it ran, or there is no cache
        found = cache.result_key(call.key, input_keys, manifest or {"changed": ",".join(seen.changed)})
    _event(call, "done", result_key=found)
    return TaskResult(value, found)
