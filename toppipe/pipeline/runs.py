"""Runs of a pipeline on a site: submitted at once, watched, remembered.

``start(session, pipeline, on=...)`` hashes each task into a cache key (its
code, its params, its inputs' keys), submits one dask task per pipeline task
to the workers of the chosen kind (``hosts`` or ``slurm``, by worker
resource), and returns a :class:`Run`. The tasks are fire-and-forget: they go
on if the notebook closes, and the site agent records every state change
(:mod:`toppipe.recorder`), so a new notebook can ``session.run(id)`` to
reattach. ``on="local"`` runs the tasks here, one after the other (no
cluster), for trying a task out.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from toppipe.pipeline.execute import TaskCall, TaskFailed, run_task, source_of
from toppipe.pipeline.graph import REQUIRED, Pipeline, PipelineError
from toppipe.pipeline.hashing import code_hash, value_hash
from toppipe.pipeline.progress import show_progress

#: Worker resource each kind of placement asks for (see roles/workers and toppipe.agent).
PLACEMENT = {"hosts": {"host": 1}, "slurm": {"slurm": 1}}
SETTLED = {"done", "cached", "failed", "cancelled"}


def effective_params(pipeline: Pipeline, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """The task's params: its defaults, overridden by the run's *params* of the same name."""
    task = pipeline.tasks[name]
    found = {}
    for param, default in task.params.items():
        value = params.get(param, default)
        if value is REQUIRED:
            raise PipelineError(f"pipeline {pipeline.name}: task {name} needs param {param!r}; pass params={{{param!r}: ...}}")
        found[param] = value
    return found


def project_modules_used(func, project: str | None, hashes: dict[str, str] | None = None) -> dict[str, str]:
    """The project's modules *func* uses (by a global name: a module, or a function or class
    of one), each with the hash of its file as it is on disk now (what workers will import).
    *hashes* (path -> hash) lets the tasks of one run share the hashing of each file."""
    if not project:
        return {}
    hashes = {} if hashes is None else hashes
    root = str(Path(project).resolve()) + "/"
    names, stack = set(), [getattr(func, "__code__", None)]
    while stack:
        code = stack.pop()
        if code is not None:
            names |= set(code.co_names)
            stack += [c for c in code.co_consts if hasattr(c, "co_names")]
    found = {}
    for name in sorted(names):
        value = getattr(func, "__globals__", {}).get(name)
        module = value if isinstance(value, type(sys)) else sys.modules.get(getattr(value, "__module__", "") or "")
        path = getattr(module, "__file__", None)
        if path and str(Path(path).resolve()).startswith(root) and Path(path).is_file():
            if path not in hashes:
                hashes[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
            found[module.__name__] = hashes[path]
    return found


def cache_keys(pipeline: Pipeline, names: list[str], params: dict[str, Any], project: str | None = None) -> dict[str, str]:
    """Per task: sha256 of its code, the project modules it uses, its params and its upstream
    tasks' keys (in run order)."""
    keys: dict[str, str] = {}
    hashes: dict[str, str] = {}  # each project file is read once per run, not once per task
    for name in names:
        task = pipeline.tasks[name]
        parts = {
            "code": code_hash(task.func),
            "uses": project_modules_used(task.func, project, hashes),
            "params": {p: value_hash(v) for p, v in sorted(effective_params(pipeline, name, params).items())},
            "upstream": {u: keys[u] for u in task.upstream},
        }
        keys[name] = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]
    return keys


def dask_key(func, run_id: str, position: int) -> str:
    """``<function name>-<run>-<position>``: dask groups tasks by the key's first word, so the
    dashboard shows one group per function, and a run of ten thousand tasks made from one
    function is one group (a group per task makes the scheduler's bookkeeping quadratic)."""
    name = "".join(c if c.isalnum() or c == "_" else "_" for c in getattr(func, "__name__", "task")) or "task"
    return f"{name}-{run_id}-{position}"


def needed(pipeline: Pipeline, only=None, downstream_of=None) -> tuple[list[str], set[str]]:
    """The tasks to submit (the selected ones and what they wait for), and the selected ones."""
    selected = pipeline.select(only=only, downstream_of=downstream_of)
    wanted = set(selected)
    for name in selected:
        wanted |= pipeline.upstream(name)
    return [n for n in pipeline.order() if n in wanted], set(selected)


def provenance(pipeline: Pipeline, record: dict, keys: dict[str, str]) -> dict:
    """Where a run came from: the pipeline's source, the project's commit, images, deployment."""
    source = Path(pipeline.source) if pipeline.source else None
    return {
        "pipeline_source": hashlib.sha256(source.read_bytes()).hexdigest()[:16] if source and source.is_file() else None,
        "tasks": {name: key[:16] for name, key in keys.items()},
        "graph": {name: {"inputs": list(t.inputs), "after": list(t.after)} for name, t in pipeline.tasks.items() if name in keys},
        "project_commit": _git_commit(Path(record.get("project_local") or ".")),
        "images": record.get("images", {}),
        "deployment": record.get("deployment"),
    }


def _git_commit(folder: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain"], capture_output=True, text=True, timeout=5)
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def start(session, pipeline: Pipeline, on: str = "hosts", only=None, downstream_of=None, params=None, force=False) -> Run:
    """Submit a run of *pipeline* and return it at once (see the module doc)."""
    import cloudpickle

    if on not in (*PLACEMENT, "local"):
        raise PipelineError(f"run(on={on!r}): choose 'hosts', 'slurm' or 'local'")
    pipeline.validate()
    params = dict(params or {})
    names, selected = needed(pipeline, only, downstream_of)
    keys = cache_keys(pipeline, names, params, session.record.get("project_local"))
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    record = session.record
    calls = {
        name: TaskCall(run=run_id, task=name, payload=cloudpickle.dumps(pipeline.tasks[name].func), key=keys[name],
                       params=effective_params(pipeline, name, params), results=record.get("results"),
                       project=record.get("project"), force=force and name in selected,
                       source=source_of(pipeline.tasks[name].func))  # fmt: skip
        for name in names
    }
    run = Run(session, run_id, pipeline.name, names)
    run.dask_keys = {name: dask_key(pipeline.tasks[name].func, run_id, i) for i, name in enumerate(names)}
    started = {"run": run_id, "state": "started", "pipeline": pipeline.name, "tasks": names, "keys": keys,
               "dask_keys": run.dask_keys, "provenance": provenance(pipeline, record, keys), "time": time.time()}  # fmt: skip
    if on == "local":
        run._start_local(pipeline, calls, started)
    else:
        run._start_on_cluster(pipeline, calls, started, PLACEMENT[on])
    return run


class Run:
    """One run: ``progress()``, ``wait()``, ``result(task)``, ``cancel()``, ``status()``, ``records()``."""

    def __init__(self, session, run_id: str, pipeline: str, tasks: list[str]):
        self.session, self.id, self.pipeline, self.tasks = session, run_id, pipeline, list(tasks)
        self.futures: dict[str, Any] = {}
        self.dask_keys: dict[str, str] = {}
        self.attached: dict[str, dict] | None = None  # task records, for a run started by another session
        self._local: dict[str, Any] = {}
        self._local_states: dict[str, str] = {}
        self._thread: threading.Thread | None = None

    # -- starting ----------------------------------------------------------

    def _start_on_cluster(self, pipeline: Pipeline, calls: dict[str, TaskCall], started: dict, resources: dict) -> None:
        from distributed import fire_and_forget

        from dask.utils import apply

        client = self.session.client
        client.log_event("toppipe-run", started)
        graph = {}  # one graph, sent in one message (a submit per task costs a round of its own)
        for name, call in calls.items():
            task = pipeline.tasks[name]
            after = [self._key(a) for a in task.after if a not in task.inputs]
            graph[self._key(name)] = (apply, _run_after, [call, after], (dict, [[i, self._key(i)] for i in task.inputs]))
        futures = client.get(graph, list(graph), sync=False, resources=resources)
        self.futures = dict(zip(calls, futures))
        fire_and_forget(futures)  # the run goes on if this notebook closes

    def _key(self, task: str) -> str:
        return self.dask_keys[task]

    def _start_local(self, pipeline: Pipeline, calls: dict[str, TaskCall], started: dict) -> None:
        def work():
            sink = _LocalRecords(self.session)  # sqlite connections stay in the thread that made them
            sink.write("toppipe-run", started)
            state = "done"
            for name, call in calls.items():
                self._local_states[name] = "running"
                sink.write("toppipe-task", {"run": self.id, "task": name, "state": "running", "time": time.time(), "host": "client"})
                try:
                    inputs = {i: self._local[i] for i in pipeline.tasks[name].inputs}
                    self._local[name] = run_task(call, **inputs)
                    self._local_states[name] = "done"
                except Exception as error:  # TaskFailed from the task; anything else from around it
                    failure = error if isinstance(error, TaskFailed) else TaskFailed(
                        self.id, name, "client", None, f"{type(error).__name__}: {error}", "")
                    self._local[name] = failure
                    self._local_states[name] = state = "failed"
                    sink.write("toppipe-task", {"run": self.id, "task": name, "state": "failed", "time": time.time(),
                                                "error": failure.error, "traceback": failure.remote_traceback})  # fmt: skip
                    break
                sink.write("toppipe-task", {"run": self.id, "task": name, "state": "done", "time": time.time()})
            sink.write("toppipe-run", {"run": self.id, "state": state, "time": time.time()})
            sink.close()

        self._thread = threading.Thread(target=work, name=f"toppipe-run-{self.id}", daemon=True)
        self._thread.start()

    # -- watching ----------------------------------------------------------

    def status(self) -> dict[str, str]:
        """Each task's state: pending, running, done, cached, failed or cancelled."""
        if self._thread is not None:
            return {name: self._local_states.get(name, "pending") for name in self.tasks}
        seen = self.session._call("toppipe_run_status", run=self.id) if self.session.record.get("records") else None
        if self.attached is not None:
            if seen is None:  # the agent restarted since: the records say
                self.attached = {t["name"]: t for t in self.records()}
                seen = {name: t["state"] for name, t in self.attached.items()}
            return {name: seen.get(name, "pending") for name in self.tasks}
        states = {}
        for name in self.tasks:
            future = self.futures.get(name)
            state = (seen or {}).get(name, "pending")
            if future is not None:
                if future.status == "error":
                    state = "failed"
                elif future.status == "cancelled":
                    state = "cancelled"
                elif future.status == "finished" and state not in ("done", "cached"):
                    state = "done"
            states[name] = state
        return states

    @property
    def done(self) -> bool:
        return all(state in SETTLED for state in self.status().values())

    def progress(self, interval: float = 0.5, timeout: float | None = None) -> dict[str, str]:
        """Show a live bar (in Jupyter, or one line in a terminal) until the run settles."""
        return show_progress(self, interval, timeout)

    def wait(self, timeout: float | None = None) -> Run:
        """Block until every task settled; raise the first failure (task, host, Slurm job, remote traceback)."""
        if self._thread is not None:
            self._thread.join(timeout)
            for name in self.tasks:
                if isinstance(self._local.get(name), TaskFailed):
                    raise self._local[name]
            return self
        if self.attached is not None:
            return self._wait_attached(timeout)
        from distributed import wait

        wait(list(self.futures.values()), timeout=timeout)
        for name in self.tasks:
            future = self.futures[name]
            if future.status == "error":
                error = future.exception()
                raise error if isinstance(error, TaskFailed) else PipelineError(f"run {self.id}: task {name} failed: {error}")
        return self

    def result(self, task: str):
        """The result of *task* (waits for it)."""
        if task not in self.tasks:
            raise PipelineError(f"run {self.id} has no task {task!r}; its tasks: {', '.join(self.tasks)}")
        if self._thread is not None:
            self.wait()
            return self._local[task]
        if self.attached is not None:
            self.wait()
            key = self.attached[task]["cache_key"]
            return self.session.client.submit(_load_cached, self.session.record["results"], key, pure=False).result()
        return self.futures[task].result()

    def _wait_attached(self, timeout: float | None) -> Run:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.done:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {self.id} did not settle within {timeout} s")
            time.sleep(0.2)
        self.attached = {t["name"]: t for t in self.records()}
        for name in self.tasks:
            record = self.attached[name]
            if record["state"] == "failed":
                raise TaskFailed(self.id, name, record["host"] or "?", record["slurm_job"], record["error"] or "", record["traceback"] or "")
        return self

    def cancel(self) -> None:
        """Stop the run: tasks not finished are cancelled, and the record says so."""
        if self.futures:
            self.session.client.cancel(list(self.futures.values()), force=True)
            self.session.client.log_event("toppipe-run", {"run": self.id, "state": "cancelled", "time": time.time()})

    def records(self) -> list[dict]:
        """The task records of this run, as the site's record store has them."""
        store = self.session.records()
        try:
            return store.tasks(self.id)
        finally:
            store.close()

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for state in self.status().values():
            counts[state] = counts.get(state, 0) + 1
        return f"<Run {self.id} of {self.pipeline}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ">"


def _run_after(call: TaskCall, after: list, **inputs):
    """The dask task: *after* only orders (its values are dropped), *inputs* are passed on."""
    return run_task(call, **inputs)


class _LocalRecords:
    """Records of a local run, written from here (no agent involved)."""

    def __init__(self, session):
        from toppipe.records import RecordStore

        url = session.record.get("records")
        self.store = RecordStore(url) if url else None

    def write(self, topic: str, msg: dict) -> None:
        if self.store is not None:
            self.store.write([(topic, msg)])

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def attach(session, run_id: str) -> Run:
    """A run started elsewhere (another notebook), from its records: its state from the agent or
    the records, its results from the cache (dask forgets finished keys nobody holds)."""
    store = session.records()
    try:
        deadline = time.monotonic() + 3  # the agent writes in batches: a run just started may be a moment away
        while (found := store.run(run_id)) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        tasks = store.tasks(run_id)
    finally:
        store.close()
    if found is None:
        raise PipelineError(f"no run {run_id!r} in the records of site {session.site}; session.runs() lists them")
    run = Run(session, run_id, found["pipeline"], [t["name"] for t in tasks])
    run.attached = {t["name"]: t for t in tasks}
    return run


def _load_cached(results: str, key: str):
    """On a worker: the cached result of a task (the results folder may be visible only there)."""
    from toppipe.pipeline.execute import _load, result_path

    return _load(result_path(results, key))


