"""What ``Run.resume()`` runs again for a run known only from the records.

A run started in this session keeps its pipeline, params and placement; a
run of another session (``session.run(id)``) has only its records. Its
pipeline is loaded again from the project by name, its selection is the one
that gives the recorded tasks, its placement is where its tasks ran, and the
tasks must make the keys the run recorded: else the code, the project modules
or the params changed, and resuming would not finish *that* run.
"""

from __future__ import annotations

from typing import Any

from toppipe.errors import ToppipeError
from toppipe.pipeline.graph import Pipeline, PipelineError


def placement_of(tasks: list[dict]) -> str:
    """Where a run's tasks ran: ``slurm`` if any had a Slurm job, ``local`` if on the client, else ``hosts``."""
    if any(t.get("slurm_job") for t in tasks):
        return "slurm"
    if any(t.get("host") == "client" for t in tasks):
        return "local"
    return "hosts"


def selection_for(pipeline: Pipeline, names: list[str]) -> tuple[str | None, str | None]:
    """``(only, downstream_of)`` that submit exactly *names* (the whole pipeline: both None)."""
    from toppipe.pipeline.launch import needed

    wanted = set(names)
    if wanted == set(pipeline.order()):
        return None, None
    for candidate in names:
        for only, downstream_of in ((candidate, None), (None, candidate)):
            try:
                if set(needed(pipeline, only, downstream_of)[0]) == wanted:
                    return only, downstream_of
            except PipelineError:  # a task the pipeline no longer has
                break
    raise PipelineError(f"no selection of pipeline {pipeline.name!r} gives the tasks {', '.join(names)}")


def changed_tasks(recorded: dict[str, str], keys: dict[str, str]) -> list[str]:
    """The tasks whose key now differs from the run's (provenance keeps each key's first 16 characters)."""
    return sorted(name for name, short in recorded.items() if keys.get(name, "")[: len(short)] != short)


def origin_from_records(session, run_id: str, params: dict[str, Any] | None) -> tuple:
    """``(pipeline, params, on, only, downstream_of)`` of a recorded run, checked against its keys."""
    from toppipe.pipeline.keys import cache_keys
    from toppipe.pipeline.launch import needed

    store = session.records()
    try:
        found, tasks = store.run(run_id), store.tasks(run_id)
    finally:
        store.close()
    if found is None:
        raise PipelineError(f"no run {run_id!r} in the records of site {session.site}; session.runs() lists them")
    name = found["pipeline"]
    if found["state"] == "running":
        raise PipelineError(f"run {run_id} is still running: wait for it (session.run({run_id!r}).wait()), or cancel it first")
    again = "load the pipeline from its file and run it again: session.load(PATH).run()"
    try:
        pipeline = session.load(name)
        only, downstream_of = selection_for(pipeline, [t["name"] for t in tasks])
    except ToppipeError as error:
        raise PipelineError(f"run {run_id} cannot be resumed: pipeline {name!r} does not load from the project as it ran "
                            f"({str(error).splitlines()[0]}); {again}") from None  # fmt: skip
    params = dict(params if params is not None else found["provenance"].get("params") or {})  # (if start() records them)
    keys = cache_keys(pipeline, needed(pipeline, only, downstream_of)[0], params, session.record.get("project_local"))
    changed = changed_tasks(found["provenance"].get("tasks", {}), keys)
    if changed:
        raise PipelineError(f"run {run_id} cannot be resumed: task{'s' * (len(changed) > 1)} {', '.join(changed)} of pipeline {name!r} changed since "
                            f"(code, project modules or params: pass the run's params= if it had any); {again}")  # fmt: skip
    return pipeline, params, placement_of(tasks), only, downstream_of
