"""A run of a pipeline, watched and remembered: :class:`Run` (made by
:func:`toppipe.pipeline.launch.start`) and :func:`attach` (a run started elsewhere, from its records).

A run's tasks are dask futures on the site (their states also come from the site agent's
records, :mod:`toppipe.recorder`), or, for ``on="local"``, a thread of this process.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from toppipe import interruptions
from toppipe.pipeline import cache, elements, fanout, summary
from toppipe.pipeline.elements import MapResults
from toppipe.pipeline.execute import TaskCall, TaskFailed, run_task
from toppipe.pipeline.graph import Pipeline, PipelineError
from toppipe.pipeline.progress import show_progress

SETTLED = {"done", "cached", "failed", "cancelled", "interrupted"}


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
        self.stages: list[list[str]] = [[name] for name in tasks]  # in submission order, a map's group together (set by start())
        self.origin: tuple | None = None  # (pipeline, params, on, only, downstream_of), set by start()
        self.maps: set[str] = set()  # the mapped tasks (their results: MapResults), set by start()

    # -- starting ----------------------------------------------------------

    def key(self, task: str) -> str:
        """The dask key of *task*."""
        return self.dask_keys[task]

    def run_here(self, pipeline: Pipeline, calls: dict[str, TaskCall], started: dict) -> None:
        """Run the tasks in a thread of this process, one stage after the other (``on="local"``)."""

        def work():
            sink = _LocalRecords(self.session)  # sqlite connections stay in the thread that made them
            sink.write("toppipe-run", started)
            state = "done"
            maps = {name: pipeline.tasks[name].map for name in calls}
            for stage in self.stages:
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
        """Stop the run: tasks not finished are cancelled, and the record says so (its event also has
        the site agent cancel what a map's group submitted: :mod:`toppipe.run_cancel`)."""
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
        from toppipe.pipeline.launch import start
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
