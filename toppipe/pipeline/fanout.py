"""Maps: a task run once per element of an upstream result, each element its own dask task.

The mapped tasks that chain from one source (``@task(map="files")``, then a
task mapping over that one, ...) form a *group*, run by one node of the run's
graph once the source is known. That node looks every element up in the
cache in one pass (no task per cached element, no round trip per element),
then submits one dask task per element still to compute, which runs the
element's chain from its first miss on. An element's cache key is the task's
key with the element's inputs (the source element's digest, or the result key
of the same element upstream), so a changed element re-runs alone. A task
that takes a mapped task's result gets the elements' values in order.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any, Callable

from toppipe.pipeline import ordering
from toppipe.pipeline.execute import TaskCall, TaskFailed, TaskResult, _event, cached, refresh_project, run_task
from toppipe.pipeline.graph import PipelineError
from toppipe.pipeline.hashing import value_hash


class MapError(PipelineError):
    """A map that cannot be run as asked."""


def groups(maps: dict[str, str | None], names: list[str]) -> dict[str, list[str]]:
    """The first mapped task of each chain -> the chain's mapped tasks among *names*, in order;
    *maps* gives each task the input it maps over (None: not mapped)."""
    found: dict[str, list[str]] = {}
    root_of: dict[str, str] = {}
    for name in names:
        source = maps.get(name)
        if source is None:
            continue
        root = root_of.get(source, name)  # a map over a mapped task joins that task's group
        root_of[name] = root
        found.setdefault(root, []).append(name)
    return found


def stages(upstream: dict[str, tuple[str, ...]], maps: dict[str, str | None], names: list[str]) -> list[list[str]]:
    """*names* in the order to submit them: ``[task]`` for a plain task, a group's tasks together
    (after everything any of them waits for). Raises MapError if a group waits for itself."""
    found = groups(maps, names)
    group_of = {member: root for root, members in found.items() for member in members}
    contracted: dict[str, list[str]] = {}
    for name in names:
        node = group_of.get(name, name)
        waits = contracted.setdefault(node, [])
        waits.extend(group_of.get(u, u) for u in upstream[name] if group_of.get(u, u) != node and u in upstream)
    order = ordering.topological(contracted)
    if len(order) < len(contracted):
        loop = ordering.cycle(contracted, [n for n in contracted if n not in order])
        raise MapError(f"the maps from {' -> '.join(loop)} wait for each other's results; collect the first one in a"
                       " task before the second map takes it")
    return [found.get(node, [node]) for node in order]


def element_call(call: TaskCall, index: int, input_keys: dict[str, str]) -> TaskCall:
    """The call of one element: named ``task[index]``, keyed by the task's key and the element's inputs."""
    text = json.dumps({"key": call.key, "inputs": input_keys}, sort_keys=True)
    return replace(call, task=f"{call.task}[{index}]", key=hashlib.sha256(text.encode()).hexdigest()[:32])


#: What an element that failed under ``on_error="continue"`` holds: left out of the collected list.
FAILED = TaskResult(None, "failed")


def collected(results: list[TaskResult]) -> TaskResult:
    """The elements' values, in order (failed ones left out), under a key made of theirs."""
    key = hashlib.sha256("\0".join(r.key for r in results).encode()).hexdigest()[:32]
    return TaskResult([r.value for r in results if r.key != FAILED.key], key)


def _inputs(call: TaskCall, maps: dict[str, str], element: TaskResult, done: dict[str, TaskResult],
            extras: dict[str, TaskResult]) -> dict[str, TaskResult]:
    source = maps[call.task]
    return {**extras, source: done.get(source, element)}


def run_element(calls: list[TaskCall], maps: dict[str, str], index: int, element: TaskResult,
                done: dict[str, TaskResult], extras: dict[str, dict[str, TaskResult]], snapshot=None) -> dict[str, TaskResult]:
    """One element's chain, computed from the first task not in *done* on (each task looked up first)."""
    done = dict(done)
    for call in calls:
        if call.task not in done:
            inputs = _inputs(call, maps, element, done, extras[call.task])
            if any(r.key == FAILED.key for r in inputs.values()):
                done[call.task] = FAILED  # its element failed upstream
                continue
            one = element_call(call, index, {n: r.key for n, r in inputs.items()})
            try:
                done[call.task] = run_task(one, snapshot, **inputs)
            except TaskFailed:
                if call.on_error != "continue":
                    raise
                done[call.task] = FAILED  # recorded failed by run_task; the run goes on
    return done


def run_group(calls: list[TaskCall], maps: dict[str, str], source: TaskResult, extras: dict[str, dict[str, TaskResult]],
              snapshot=None, submit: Callable | None = None) -> dict[str, TaskResult]:
    """Every element of *source* through the group's *calls*: the cached ones here in one pass, the
    rest through *submit(indexes, elements, dones)* (one dask task each), or here one by one."""
    elements = [TaskResult(value, "element:" + value_hash(value)) for value in source.value]
    if calls:
        refresh_project(calls[0].project)
        for call in calls:
            _event(call, "running", elements=len(elements))
    dones: list[dict[str, TaskResult]] = []
    for index, element in enumerate(elements):
        done: dict[str, TaskResult] = {}
        for call in calls:
            inputs = _inputs(call, maps, element, done, extras[call.task])
            input_keys = {n: r.key for n, r in inputs.items()}
            hit = cached(element_call(call, index, input_keys), snapshot, input_keys)
            if hit is None:
                break
            done[call.task] = hit
        dones.append(done)
    missing = [i for i, done in enumerate(dones) if len(done) < len(calls)]
    if missing:
        if submit is None:
            computed = [run_element(calls, maps, i, elements[i], dones[i], extras, snapshot) for i in missing]
        else:
            computed = submit(missing, [elements[i] for i in missing], [dones[i] for i in missing])
        for i, done in zip(missing, computed):
            dones[i] = done
    found = {call.task: collected([done[call.task] for done in dones]) for call in calls}
    for call in calls:
        _event(call, "done" if missing else "cached", result_key=found[call.task].key,
               computed=len(missing), elements=len(elements))  # fmt: skip
    return found


def run_group_on_worker(calls: list[TaskCall], maps: dict[str, str], keys, resources: dict[str, Any],
                        snapshot, source: TaskResult, extras: dict[str, dict[str, TaskResult]], after=()) -> dict[str, TaskResult]:
    """The group's dask task: elements to compute go to the cluster as one task each, under *keys*
    (one per element), while this task waits without holding a worker thread; *after* only orders."""
    from distributed import worker_client

    def submit(indexes, elements, dones):
        with worker_client() as client:
            futures = client.map(run_element, [calls] * len(indexes), [maps] * len(indexes), indexes, elements, dones,
                                 [extras] * len(indexes), [snapshot] * len(indexes),
                                 key=[keys[i] for i in indexes], resources=resources, pure=False)  # fmt: skip
            # The elements outlive this task: if its worker retires (a Slurm worker rotated before
            # its walltime), this task runs again elsewhere and takes over the running elements by
            # their keys, rather than have them dropped with this worker's client and computed twice.
            fire_and_forget(client, futures)
            return client.gather(futures)

    return run_group(calls, maps, source, extras, snapshot, submit)


def fire_and_forget(client, futures: list) -> None:
    """``distributed.fire_and_forget(futures)`` in one message to the scheduler: dask sends one per
    future, each a wake-up of the client's event loop (about 0.1 ms each, a second per 10,000 tasks)."""
    send = getattr(client, "_send_to_scheduler", None)
    if send is None:  # (a dask without it: its own way)
        import distributed

        distributed.fire_and_forget(futures)
    elif futures:
        send({"op": "client-desires-keys", "keys": [future.key for future in futures], "client": "fire-and-forget"})


def pick(found: dict[str, TaskResult], name: str) -> TaskResult:
    """One mapped task's collected result, from its group's."""
    return found[name]
