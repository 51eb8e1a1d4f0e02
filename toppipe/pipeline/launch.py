"""Starting a run: ``start(session, pipeline, on=...)`` keys each task (:mod:`~toppipe.pipeline.keys`),
places it on the workers that fit it, submits it and returns the :class:`~toppipe.pipeline.runs.Run`.

On a cluster, each stretch of plain tasks is one graph sent in one message, a map's group is
submitted on its own (:mod:`~toppipe.pipeline.fanout`), and every task is fire-and-forget: the
run goes on if the notebook closes, and the site agent records every state change
(:mod:`toppipe.recorder`). ``on="local"`` runs the tasks here, one after the other, for trying a
task out.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from toppipe.pipeline import fanout, packages, sources
from toppipe.pipeline.execute import TaskCall, TaskResult, run_task, source_of
from toppipe.pipeline.graph import Pipeline, PipelineError
from toppipe.pipeline.keys import cache_keys, dask_key, provenance, task_params
from toppipe.pipeline.reads import Snapshot
from toppipe.pipeline.runs import Run
from toppipe.pipeline.sources import ModuleUse
from toppipe.pool_resources import fits, unplaceable_message

#: Worker resource each kind of placement asks for (see roles/workers and toppipe.agent).
PLACEMENT = {"hosts": {"host": 1}, "slurm": {"slurm": 1}}


def needed(pipeline: Pipeline, only=None, downstream_of=None) -> tuple[list[str], set[str]]:
    """The tasks to submit (the selected ones and what they wait for), and the selected ones."""
    selected = pipeline.select(only=only, downstream_of=downstream_of)
    wanted = set(selected)
    for name in selected:
        wanted |= pipeline.upstream(name)
    return [n for n in pipeline.order() if n in wanted], set(selected)


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
                       params=task_params(pipeline.name, tasks[name], params), results=record.get("results"),
                       project=record.get("project"), force=force and name in selected,
                       source=source_of(tasks[name].func), uses=uses[name], retries=tasks[name].retries,
                       on_error=tasks[name].on_error, timeout=tasks[name].timeout, map=tasks[name].map)  # fmt: skip
        for name in names
    }
    run = Run(session, run_id, pipeline.name, names)
    run.origin = (pipeline, dict(params), on, only, downstream_of)  # what resume() runs again
    run.dask_keys = {name: dask_key(tasks[name].func, run_id, i) for i, name in enumerate(names)}
    run.maps = {n for n in names if tasks[n].map is not None}
    run.stages = fanout.stages({n: tasks[n].upstream for n in names}, {n: tasks[n].map for n in names}, names)
    started = {"run": run_id, "state": "started", "pipeline": pipeline.name, "tasks": names, "keys": keys,
               "dask_keys": run.dask_keys, "provenance": provenance(pipeline, record, keys), "time": time.time()}  # fmt: skip
    if on == "local":
        run.run_here(pipeline, calls, started)
    else:
        _submit(run, pipeline, calls, started, needs)
    return run


def placement(session, pipeline: Pipeline, names: list[str], on: str) -> dict[str, dict[str, float]]:
    """What each task asks of a worker: its own pool or resources, else the run's *on* (a kind of
    pool, or a pool's name). A PipelineError at once when no pool of the site offers it."""
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


def _submit(run: Run, pipeline: Pipeline, calls: dict[str, TaskCall], started: dict, needs: dict[str, dict]) -> None:
    """Send the run's tasks to the cluster as dask tasks, fire-and-forget (see the module doc)."""
    from dask.utils import apply

    client = run.session.client
    client.log_event("toppipe-run", started)
    # One graph per stretch of plain tasks, sent in one message (a submit per task costs a round
    # of its own); a map's group is submitted on its own, without the workers' resource, since it
    # waits for its elements (which take the resource) while it holds none.
    snapshot = f"toppipe-snapshot-{run.id}"  # the saved project, sent once, for workers' synced copies
    graph: dict = {snapshot: _synced_snapshot(run.session.record)}
    held: dict[str, Any] = {}  # dask key -> future, for what later submissions depend on
    first_needs = needs[run.stages[0][0]] if run.stages else {}
    resources = dict(first_needs)  # what the graph being built asks of its workers (the snapshot goes with it)

    def flush() -> None:
        if graph:
            named = _named_graph(graph, f"{run.id}-{len(held)}")
            for key, future in zip(graph, client.get(named, list(graph), sync=False, resources=resources)):
                held[key] = future
            graph.clear()

    tasks = pipeline.tasks  # (a copy each time it is read)
    maps = {name: tasks[name].map for name in calls}
    for stage in run.stages:
        name = stage[0]
        task = tasks[name]
        if maps[name] is not None:
            flush()
            resources = needs[name]
            extras = {m: {i: held[run.key(i)] for i in tasks[m].inputs if i != maps[m]} for m in stage}
            after = [held[run.key(a)] for m in stage for a in tasks[m].after
                     if a not in tasks[m].inputs and a not in stage]  # fmt: skip
            first = run.key(name)
            group = client.submit(fanout.run_group_on_worker, [calls[m] for m in stage], {m: maps[m] for m in stage},
                                  _ElementKeys(first), needs[name], held[snapshot], held[run.key(maps[name])], extras,
                                  after, key=f"{first}-group", pure=False)  # fmt: skip
            for member in stage:
                held[run.key(member)] = client.submit(fanout.pick, group, member, key=run.key(member), pure=False)
            continue
        if needs[name] != resources:  # one graph asks one thing of its workers
            flush()
            resources = needs[name]
        ref = lambda key: held.get(key, key)  # noqa: E731 - a key of this graph, or the future of one sent before
        after = [ref(run.key(a)) for a in task.after if a not in task.inputs]
        graph[run.key(name)] = (apply, _run_after, [calls[name], after, ref(snapshot)],
                                  (dict, [[i, ref(run.key(i))] for i in task.inputs]))  # fmt: skip
    flush()
    run.futures = {name: held[run.key(name)] for name in calls}
    fanout.fire_and_forget(client, list(held.values()))  # the run goes on if this notebook closes


class _ElementKeys:
    """The dask keys of a group's elements, ``<first task's key>-e<index>``, made when asked (not ten
    thousand strings sent with the group)."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    def __getitem__(self, index: int) -> str:
        return f"{self.prefix}-e{index}"


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
