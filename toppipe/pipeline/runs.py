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
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from toppipe import interruptions
from toppipe.pipeline import cache, elements, fanout, packages, sources, summary
from toppipe.pipeline.elements import MapResults
from toppipe.pipeline.execute import TaskCall, TaskFailed, TaskResult, run_task, source_of
from toppipe.pipeline.graph import REQUIRED, Pipeline, PipelineError, Task
from toppipe.pipeline.hashing import code_hash, value_hash
from toppipe.pipeline.progress import show_progress
from toppipe.pipeline.reads import Snapshot
from toppipe.pipeline.sources import ModuleUse

#: Worker resource each kind of placement asks for (see roles/workers and toppipe.agent).
PLACEMENT = {"hosts": {"host": 1}, "slurm": {"slurm": 1}}
SETTLED = {"done", "cached", "failed", "cancelled", "interrupted"}


def effective_params(pipeline: Pipeline, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """The task's params: its defaults, overridden by the run's *params* of the same name."""
    return _task_params(pipeline.name, pipeline.tasks[name], params)


def _task_params(pipeline: str, task: Task, params: dict[str, Any]) -> dict[str, Any]:
    found = {}
    for param, default in task.params.items():
        value = params.get(param, default)
        if value is REQUIRED:
            raise PipelineError(f"pipeline {pipeline}: task {task.name} needs param {param!r}; pass params={{{param!r}: ...}}")
        found[param] = value
    return found


def cache_keys(pipeline: Pipeline, names: list[str], params: dict[str, Any], project: str | None = None,
               uses: dict[str, tuple[ModuleUse, ...]] | None = None) -> dict[str, str]:
    """Per task: sha256 of its code, the helpers that travel with it by value, what it reaches of
    the project modules it uses (:func:`sources.reached_digests`), its params and its upstream tasks' keys (in run order).
    *uses* receives each task's modules."""
    keys: dict[str, str] = {}
    tasks = pipeline.tasks  # (a copy each time it is read)
    code_parts: dict[tuple, tuple] = {}  # what functions of the same code, globals and closure share
    for name in names:
        task = tasks[name]
        shared = _code_identity(task.func)
        found = code_parts.get(shared) if shared is not None else None
        if found is None:
            modules = sources.modules_used(task.func, project)
            found = (modules, code_hash(task.func), sources.helpers_by_value(task.func),
                     sources.reached_digests(task.func, modules, project) if modules else {})  # fmt: skip
            if shared is not None:
                code_parts[shared] = found
        modules = found[0]
        if uses is not None:
            uses[name] = modules
        parts = {
            "code": found[1],
            "helpers": found[2],
            "uses": found[3],
            "params": {p: value_hash(v) for p, v in sorted(_task_params(pipeline.name, task, params).items())},
            "upstream": {u: keys[u] for u in task.upstream},
        }
        if task.map is not None:  # (left out otherwise: keys made before maps existed stay valid)
            parts["map"] = task.map  # each element's key adds its own input: the source's key stays out
            del parts["upstream"][task.map]
        keys[name] = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]
    return keys


def _code_identity(func) -> tuple | None:
    """What the modules, helpers and code digest of *func* follow from: its code, module, globals and
    closed-over values (ten thousand tasks made by one factory are hashed once). None: hash it alone
    (not a plain function, or one that names itself: its helpers leave it out)."""
    code = getattr(func, "__code__", None)
    scope = getattr(func, "__globals__", None)
    if code is None or scope is None or any(scope.get(name) is func for name in code.co_names):
        return None
    cells = []
    for cell in func.__closure__ or ():
        try:
            cells.append(id(cell.cell_contents))
        except ValueError:  # an empty cell
            cells.append(None)
    return (code, func.__module__, id(scope), tuple(cells))


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
        "graph": {name: {"inputs": list(t.inputs), "after": list(t.after), **({"map": t.map} if t.map else {})}
                  for name, t in pipeline.tasks.items() if name in keys},
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

    if not isinstance(on, str) or not on:
        raise PipelineError(f"run(on={on!r}): choose 'hosts', 'slurm', a pool's name or 'local'")
    pipeline.validate()
    params = dict(params or {})
    names, selected = needed(pipeline, only, downstream_of)
    needs = {} if on == "local" else placement(session, pipeline, names, on)
    record = session.record
    uses: dict[str, tuple[ModuleUse, ...]] = {}
    keys = cache_keys(pipeline, names, params, record.get("project_local"), uses)
    if on != "local":
        for name in names:
            packages.refuse_outside(name, uses[name])
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    tasks = pipeline.tasks  # (a copy each time it is read)
    calls = {
        name: TaskCall(run=run_id, task=name, payload=cloudpickle.dumps(tasks[name].func), key=keys[name],
                       params=_task_params(pipeline.name, tasks[name], params), results=record.get("results"),
                       project=record.get("project"), force=force and name in selected,
                       source=source_of(tasks[name].func), uses=uses[name], retries=tasks[name].retries,
                       on_error=tasks[name].on_error, timeout=tasks[name].timeout, map=tasks[name].map)  # fmt: skip
        for name in names
    }
    run = Run(session, run_id, pipeline.name, names)
    run.origin = (pipeline, dict(params), on, only, downstream_of)  # what resume() runs again
    run.dask_keys = {name: dask_key(tasks[name].func, run_id, i) for i, name in enumerate(names)}
    run.maps = {n for n in names if tasks[n].map is not None}
    run._stages = fanout.stages({n: tasks[n].upstream for n in names}, {n: tasks[n].map for n in names}, names)
    started = {"run": run_id, "state": "started", "pipeline": pipeline.name, "tasks": names, "keys": keys,
               "dask_keys": run.dask_keys, "provenance": provenance(pipeline, record, keys), "time": time.time()}  # fmt: skip
    if on == "local":
        run._start_local(pipeline, calls, started)
    else:
        run._start_on_cluster(pipeline, calls, started, needs)
    return run


def placement(session, pipeline: Pipeline, names: list[str], on: str) -> dict[str, dict[str, float]]:
    """What each task asks of a worker: its own pool or resources, else the run's *on* (a kind of
    pool, or a pool's name). A PipelineError at once when no pool of the site offers it."""
    from toppipe.agent_pools import fits, unplaceable_message

    pools = session._call("toppipe_pools")
    offers = {p["name"]: p["offer"] for p in pools}
    if on in PLACEMENT:
        default = PLACEMENT[on]
    elif on in offers:
        default = {f"pool:{on}": 1}
    else:
        raise PipelineError(f"run(on={on!r}): choose 'hosts', 'slurm', 'local' or a pool of site {session.site}: {', '.join(offers)}")
    tasks = pipeline.tasks  # (a copy each time it is read)
    needs = {name: tasks[name].needs or default for name in names}
    for name, asked in needs.items():
        if not any(fits(asked, offer) for offer in offers.values()):
            raise PipelineError(f"task {name!r}: {unplaceable_message(asked, offers)}")
    return needs


class Run:
    """One run: ``progress()``, ``wait()``, ``result(task)``, ``cancel()``, ``status()``, ``summary()``,
    ``elements(task)``, ``failed()``, ``records()``."""

    def __init__(self, session, run_id: str, pipeline: str, tasks: list[str]):
        self.session, self.id, self.pipeline, self.tasks = session, run_id, pipeline, list(tasks)
        self.futures: dict[str, Any] = {}
        self.dask_keys: dict[str, str] = {}
        self.attached: dict[str, dict] | None = None  # task records, for a run started by another session
        self._local: dict[str, Any] = {}
        self._local_states: dict[str, str] = {}
        self._thread: threading.Thread | None = None
        self._stages: list[list[str]] = [[name] for name in tasks]  # set by start(): a map's group together
        self.origin: tuple | None = None  # (pipeline, params, on, only, downstream_of), set by start()
        self.maps: set[str] = set()  # the mapped tasks (their results: MapResults), set by start()

    # -- starting ----------------------------------------------------------

    def _start_on_cluster(self, pipeline: Pipeline, calls: dict[str, TaskCall], started: dict, needs: dict[str, dict]) -> None:
        from dask.utils import apply

        client = self.session.client
        client.log_event("toppipe-run", started)
        # One graph per stretch of plain tasks, sent in one message (a submit per task costs a round
        # of its own); a map's group is submitted on its own, without the workers' resource, since it
        # waits for its elements (which take the resource) while it holds none.
        snapshot = f"toppipe-snapshot-{self.id}"  # the saved project, sent once, for workers' synced copies
        graph: dict = {snapshot: _synced_snapshot(self.session.record)}
        held: dict[str, Any] = {}  # dask key -> future, for what later submissions depend on
        first_needs = needs[self._stages[0][0]] if self._stages else {}
        resources = dict(first_needs)  # what the graph being built asks of its workers (the snapshot goes with it)

        def flush() -> None:
            if graph:
                named = _named_graph(graph, f"{self.id}-{len(held)}")
                for key, future in zip(graph, client.get(named, list(graph), sync=False, resources=resources)):
                    held[key] = future
                graph.clear()

        tasks = pipeline.tasks  # (a copy each time it is read)
        maps = {name: tasks[name].map for name in calls}
        for stage in self._stages:
            name = stage[0]
            task = tasks[name]
            if maps[name] is not None:
                flush()
                resources = needs[name]
                extras = {m: {i: held[self._key(i)] for i in tasks[m].inputs if i != maps[m]} for m in stage}
                after = [held[self._key(a)] for m in stage for a in tasks[m].after
                         if a not in tasks[m].inputs and a not in stage]  # fmt: skip
                first = self._key(name)
                group = client.submit(fanout.run_group_on_worker, [calls[m] for m in stage], {m: maps[m] for m in stage},
                                      _ElementKeys(first), needs[name], held[snapshot], held[self._key(maps[name])], extras,
                                      after, key=f"{first}-group", pure=False)  # fmt: skip
                for member in stage:
                    held[self._key(member)] = client.submit(fanout.pick, group, member, key=self._key(member), pure=False)
                continue
            if needs[name] != resources:  # one graph asks one thing of its workers
                flush()
                resources = needs[name]
            ref = lambda key: held.get(key, key)  # noqa: E731 - a key of this graph, or the future of one sent before
            after = [ref(self._key(a)) for a in task.after if a not in task.inputs]
            graph[self._key(name)] = (apply, _run_after, [calls[name], after, ref(snapshot)],
                                      (dict, [[i, ref(self._key(i))] for i in task.inputs]))  # fmt: skip
        flush()
        self.futures = {name: held[self._key(name)] for name in calls}
        _fire_and_forget(client, list(held.values()))  # the run goes on if this notebook closes

    def _key(self, task: str) -> str:
        return self.dask_keys[task]

    def _start_local(self, pipeline: Pipeline, calls: dict[str, TaskCall], started: dict) -> None:
        def work():
            sink = _LocalRecords(self.session)  # sqlite connections stay in the thread that made them
            sink.write("toppipe-run", started)
            state = "done"
            maps = {name: pipeline.tasks[name].map for name in calls}
            for stage in self._stages:
                name = stage[0]
                for member in stage:
                    self._local_states[member] = "running"
                    sink.write("toppipe-task", {"run": self.id, "task": member, "state": "running", "time": time.time(),
                                                "host": "client"})  # fmt: skip
                try:
                    if maps[name] is not None:
                        extras = {m: {i: self._local[i] for i in pipeline.tasks[m].inputs if i != maps[m]} for m in stage}
                        self._local.update(fanout.run_group([calls[m] for m in stage], {m: maps[m] for m in stage},
                                                            self._local[maps[name]], extras))  # fmt: skip
                    else:
                        inputs = {i: self._local[i] for i in pipeline.tasks[name].inputs}
                        self._local[name] = run_task(calls[name], **inputs)
                except Exception as error:  # TaskFailed from the task; anything else from around it
                    failure = error if isinstance(error, TaskFailed) else TaskFailed(
                        self.id, name, "client", None, f"{type(error).__name__}: {error}", "")
                    for member in stage:
                        self._local[member] = failure
                        self._local_states[member] = state = "failed"
                        sink.write("toppipe-task", {"run": self.id, "task": member, "state": "failed", "time": time.time(),
                                                    "error": failure.error, "traceback": failure.remote_traceback,
                                                    "inputs": failure.inputs})  # fmt: skip
                    break
                for member in stage:
                    self._local_states[member] = "done"
                    sink.write("toppipe-task", {"run": self.id, "task": member, "state": "done", "time": time.time(),
                                                "result_key": self._local[member].key})  # fmt: skip
            sink.write("toppipe-run", {"run": self.id, "state": state, "time": time.time()})
            sink.close()

        self._thread = threading.Thread(target=work, name=f"toppipe-run-{self.id}", daemon=True)
        self._thread.start()

    # -- watching ----------------------------------------------------------

    def status(self) -> dict[str, str]:
        """Each task's state: pending, running, done, cached, failed, cancelled or interrupted."""
        if self._thread is not None:
            return {name: self._local_states.get(name, "pending") for name in self.tasks}
        with self.session.guard_scheduler(self.id, self.futures.values()):
            if any(interruptions.cancelled_by_loss(f) for f in self.futures.values()):
                raise interruptions.run_interrupted(self.session.record, self.id)
            seen = self.session._call("toppipe_run_status", run=self.id) if self.session.record.get("records") else None
        if self.attached is not None:
            if seen is None:  # the agent restarted since: the records say
                self.attached = self._task_records()
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

    def summary(self) -> summary.RunSummary:
        """One row per task: its state and, for a map, its elements counted by state (done, cached,
        running, pending, failed, ...), from one query of the records whatever their number.
        ``print(run.summary())`` shows a table; ``run.summary()["clean"].counts`` the counts."""
        states = self.status()
        if not self.session.record.get("records"):
            return summary.RunSummary(self.id, self.pipeline, summary.summarize(self.tasks, states, {}, {}))
        store = self.session.records()
        try:
            return summary.RunSummary(self.id, self.pipeline, summary.read(store, self.id, self.tasks, states))
        finally:
            store.close()

    def elements(self, task: str, state: str | None = None, limit: int | None = 50, offset: int = 0) -> list[dict]:
        """A page of the elements of the mapped *task* (those in *state* if given), in index order,
        from the records: name, index, state, host, Slurm job, attempts, started, ended, error,
        inputs and remote traceback. ``limit=None``: all of them."""
        if task not in self.tasks:
            raise PipelineError(f"run {self.id} has no task {task!r}; its tasks: {', '.join(self.tasks)}")
        if state is not None and state not in summary.STATES:
            raise PipelineError(f"elements(state={state!r}): choose one of {', '.join(summary.STATES)}")
        fields = ("name", "index", "state", "host", "pool", "partition", "slurm_job", "attempts", "started", "ended", "error",
                  "inputs", "traceback")
        store = self.session.records()
        try:
            rows = store.elements(self.id, task, state=state, limit=limit, offset=offset)
        finally:
            store.close()
        return [{f: row.get(f) for f in fields} for row in rows]

    def progress(self, interval: float = 0.5, timeout: float | None = None) -> dict[str, str]:
        """Show the run's tasks live, a map's elements counted by state (a table in Jupyter, one line
        in a terminal), until the run settles; its tasks' last states."""
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
        from concurrent.futures import CancelledError

        from distributed import wait

        with self.session.guard_scheduler(self.id, self.futures.values()):
            try:
                wait(list(self.futures.values()), timeout=timeout)
            except CancelledError:
                if any(interruptions.cancelled_by_loss(f) for f in self.futures.values()):
                    raise
                raise PipelineError(f"run {self.id} was cancelled") from None
        for name in self.tasks:
            future = self.futures[name]
            if future.status == "error":
                error = future.exception()
                if isinstance(error, TaskFailed):
                    raise error
                raise PipelineError(f"run {self.id}: task {name} failed: {self._memory_kill(name, error) or error}")
        return self

    def _memory_kill(self, task: str, error: BaseException) -> str | None:
        """Why *task* died, when the workers running it were ended for memory (see :mod:`toppipe.memory_kills`)."""
        from toppipe import memory_kills

        if type(error).__name__ != "KilledWorker":
            return None
        hosts = {address: name for name, address in self.session.record.get("hosts", {}).items()}
        with self.session.guard_scheduler(self.id):
            events = self.session.client.get_events(memory_kills.TOPIC)
        return memory_kills.explain(task, error, events, hosts)

    def result(self, task: str):
        """The result of *task* (waits for it). A mapped task's is a :class:`MapResults`: a sequence
        whose elements stay on the workers (or in the result cache) until indexed, sliced or
        iterated; ``list(...)`` fetches them all."""
        if task not in self.tasks:
            raise PipelineError(f"run {self.id} has no task {task!r}; its tasks: {', '.join(self.tasks)}")
        if self._thread is not None:
            self.wait()
            found = self._local[task]
            if task in self.maps:
                return MapResults(task, elements.count_held(found), lambda indexes: elements.take_held(found, indexes),
                                  lambda count: elements.preview_held(found, count))  # fmt: skip
            return found.value
        if self.attached is not None:
            self.wait()
            if task in self._attached_maps():
                return self._cached_elements(task)
            key = self.attached[task]["cache_key"]
            with self.session.guard_scheduler(self.id):
                return self.session.client.submit(_load_cached, self.session.record["results"], key, pure=False).result()
        future = self.futures[task]
        if task in self.maps:
            with self.session.guard_scheduler(self.id, [future]):
                if future.exception() is not None:  # (waits)
                    future.result()  # raises the map's failure, as for any task
            on_worker = lambda func, *args: self._on_worker(func, future, *args)  # noqa: E731
            return MapResults(task, on_worker(elements.count_held), lambda indexes: on_worker(elements.take_held, indexes),
                              lambda count: on_worker(elements.preview_held, count))  # fmt: skip
        with self.session.guard_scheduler(self.id, self.futures.values()):
            try:
                return future.result().value
            except Exception as error:  # noqa: BLE001 - only a memory kill is told otherwise
                explained = self._memory_kill(task, error)
                if explained is None:
                    raise
        raise PipelineError(f"run {self.id}: {explained}")

    def _on_worker(self, func, *args):
        """*func(*args)* run on a worker (dask picks one holding the futures among *args*), its value here."""
        with self.session.guard_scheduler(self.id, self.futures.values()):
            return self.session.client.submit(func, *args, pure=False).result()

    def _attached_maps(self) -> set[str]:
        """The mapped tasks of a run started elsewhere: its provenance names them; runs recorded
        before it did have an element ``task[0]`` for each non-empty map."""
        store = self.session.records()
        try:
            graph = (store.run(self.id) or {}).get("provenance", {}).get("graph", {})
            named = {name for name, node in graph.items() if node.get("map")}
            return named or set(store.element_counts(self.id))
        finally:
            store.close()

    def _cached_elements(self, task: str) -> MapResults:
        """A mapped task's results from the cache, read by a worker, by the result keys its
        elements were recorded with (the failed ones left out)."""
        store = self.session.records()
        try:
            keys = [row["cache_key"] for row in store.elements(self.id, task, state=("done", "cached"), limit=None)]
        finally:
            store.close()
        results = self.session.record["results"]
        fetch = lambda indexes: self._on_worker(elements.take_cached, results, [keys[i] for i in indexes])  # noqa: E731
        return MapResults(task, len(keys), fetch, lambda count: self._on_worker(elements.preview_cached, results, keys[:count]))

    def _wait_attached(self, timeout: float | None) -> Run:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.done:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {self.id} did not settle within {timeout} s")
            time.sleep(0.2)
        self.attached = self._task_records()
        if any(t["state"] == "interrupted" for t in self.attached.values()):
            raise interruptions.run_interrupted(self.session.record, self.id, recorded=True)
        for name in self.tasks:
            record = self.attached[name]
            if record["state"] == "failed":
                raise TaskFailed(self.id, name, record["host"] or "?", record["slurm_job"], record["error"] or "",
                                 record["traceback"] or "", record.get("inputs"))  # fmt: skip
        return self

    def cancel(self) -> None:
        """Stop the run: tasks not finished are cancelled, and the record says so."""
        if self.futures:
            with self.session.guard_scheduler(self.id, self.futures.values()):
                self.session.client.cancel(list(self.futures.values()), force=True)
                self.session.client.log_event("toppipe-run", {"run": self.id, "state": "cancelled", "time": time.time()})

    def resume(self, on: str | None = None, params: dict[str, Any] | None = None) -> Run:
        """Run this run's tasks again, as a new run that it returns: the tasks that had finished
        come from the cache (recorded ``cached``), only the rest is computed. For a run of another
        session, the pipeline is loaded again from the project and must make the keys the run
        recorded. *on* and *params* default to the run's own; the session reconnects first if its
        scheduler was lost (after ``deploy up`` brought it back)."""
        from toppipe.errors import RunInterruptedError
        from toppipe.pipeline.resume import origin_from_records

        try:
            unsettled = [name for name, state in self.status().items() if state not in SETTLED]
        except RunInterruptedError:
            unsettled = []
        if unsettled:
            raise PipelineError(f"run {self.id} is still running ({', '.join(unsettled)}): wait for it, or cancel it first")
        if self._thread is None and self.session.client.status != "running":
            self.session.reconnect()
        if self.origin is not None:
            pipeline, kept, placement, only, downstream_of = self.origin
        else:
            pipeline, kept, placement, only, downstream_of = origin_from_records(self.session, self.id, params)
        return start(self.session, pipeline, on=on or placement, only=only, downstream_of=downstream_of,
                     params=kept if params is None else params)  # fmt: skip

    def failed(self) -> list[dict]:
        """The tasks and map elements (``task[index]``: that element of its input) that failed, from
        the records: name, inputs (``name=value, ...``, the element first, each value shortened, at
        most ``execute.INPUT_LIMIT`` characters), host, Slurm job, error and remote traceback."""
        fields = ("name", "inputs", "host", "slurm_job", "error", "traceback")
        store = self.session.records()
        try:
            return [{f: record.get(f) for f in fields} for record in store.tasks(self.id, state="failed")]
        finally:
            store.close()

    def retry_failed(self, on: str | None = None) -> Run:
        """Run again what failed (after a fix): a new run of the same tasks, whose finished tasks and
        elements come from the cache, so only the failed ones (and what follows them) compute."""
        return self.resume(on=on)

    def records(self) -> list[dict]:
        """The task records of this run, as the site's record store has them (its maps' elements too)."""
        store = self.session.records()
        try:
            return store.tasks(self.id)
        finally:
            store.close()

    def _task_records(self) -> dict[str, dict]:
        """The records of the run's tasks (not its maps' elements), by name."""
        store = self.session.records()
        try:
            return {t["name"]: t for t in store.tasks(self.id, elements=False)}
        finally:
            store.close()

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for state in self.status().values():
            counts[state] = counts.get(state, 0) + 1
        return f"<Run {self.id} of {self.pipeline}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ">"


class _ElementKeys:
    """The dask keys of a group's elements, ``<first task's key>-e<index>``, made when asked (not ten
    thousand strings sent with the group)."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    def __getitem__(self, index: int) -> str:
        return f"{self.prefix}-e{index}"


def _fire_and_forget(client, futures: list) -> None:
    """``distributed.fire_and_forget(futures)`` in one message to the scheduler: dask sends one per
    future, each a wake-up of the client's event loop (about 0.1 ms each, a second per 10,000 tasks)."""
    send = getattr(client, "_send_to_scheduler", None)
    if send is None:  # (a dask without it: its own way)
        from distributed import fire_and_forget

        fire_and_forget(futures)
    elif futures:
        send({"op": "client-desires-keys", "keys": [future.key for future in futures], "client": "fire-and-forget"})


def _named_graph(graph: dict, name: str):
    """*graph* as ``client.get`` takes it, already named (*name*: unique): else dask names it by
    tokenizing every task in it on the client, a quarter of a millisecond each, for a graph sent once."""
    try:
        from dask._expr import LLGExpr
    except ImportError:  # (a dask without expressions takes the dict as it is)
        return graph
    return LLGExpr(dict(graph), _determ_token=name)


def _run_after(call: TaskCall, after: list, snapshot: Snapshot | None, **inputs) -> TaskResult:
    """The dask task: *after* only orders (its values are dropped), *inputs* are passed on."""
    return run_task(call, snapshot, **inputs)


def _synced_snapshot(record: dict) -> Snapshot | None:
    """The client's project files now, where workers see a synced copy of them (else None)."""
    local, remote = record.get("project_local"), record.get("project")
    if not local or not remote or Path(local).resolve() == Path(remote).resolve() or not Path(local).is_dir():
        return None
    return sources.snapshot(local)


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
        tasks = store.tasks(run_id, elements=False)  # (not the maps' elements: thousands, read when asked for)
    finally:
        store.close()
    if found is None:
        raise PipelineError(f"no run {run_id!r} in the records of site {session.site}; session.runs() lists them")
    run = Run(session, run_id, found["pipeline"], [t["name"] for t in summary.run_order(tasks)])
    run.attached = {t["name"]: t for t in tasks}
    return run


def _load_cached(results: str, key: str):
    """On a worker: the cached result of a task (the results folder may be visible only there)."""
    return cache.load(results, key)


