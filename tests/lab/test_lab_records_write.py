"""The run recorder's writes to the lab's PostgreSQL record store, in one pipeline per batch,
leave the store as statement-by-statement writes do (a map's elements, a failed task, the
agent's interruption of the runs still running, which reads inside the pipeline)."""

from __future__ import annotations

import time
import uuid

import pytest

# lab_alone: the agent event it writes interrupts every run still running in the site's store
pytestmark = [pytest.mark.lab, pytest.mark.lab_alone]


def run_events(run: str, elements: int) -> list[tuple[str, dict]]:
    """A run of a map and a plain task: elements running then done, the task failing, the run left running."""
    now = time.time()
    events = [("toppipe-run", {"run": run, "state": "started", "pipeline": "records-write", "tasks": ["square", "load"],
                               "keys": {"load": "cache-key-of-load"}, "time": now})]  # fmt: skip
    for i in range(elements):
        events.append(("toppipe-task", {"run": run, "task": f"square[{i}]", "state": "running", "host": "node1", "time": now + i}))
        events.append(("toppipe-task", {"run": run, "task": f"square[{i}]", "state": "done", "time": now + i + 0.5}))
    events.append(("toppipe-task", {"run": run, "task": "load", "state": "running", "host": "node2", "time": now}))
    events.append(("toppipe-task", {"run": run, "task": "load", "state": "failed", "error": "ValueError: bad row",
                                    "time": now + 1}))  # fmt: skip
    return events


def stored(store, run: str) -> tuple[dict, list[dict]]:
    """The run's row and its tasks' rows, without the run id."""
    row = {k: v for k, v in store.run(run).items() if k != "id"}
    tasks = sorted(({k: v for k, v in t.items() if k != "run_id"} for t in store.tasks(run)), key=lambda t: t["name"])
    return row, tasks


def test_pipelined_writes_store_what_statement_by_statement_writes_store(session):
    store = session.records()
    try:
        found = {}
        for pipelined in (False, True):
            store.pipelined = pipelined
            run = f"records-write-{uuid.uuid4().hex[:12]}"
            events = run_events(run, 300)
            for first in range(0, len(events), 250):  # batches, as the recorder writes them
                store.write(events[first : first + 250])
            # the agent stops: the run, still running, is interrupted; its unsettled tasks too
            store.write([("toppipe-agent", {"state": "stopping", "time": time.time(), "why": "records-write test"})])
            found[pipelined] = stored(store, run)
        unpiped, piped = found[False], found[True]
        assert piped[0]["state"] == "interrupted" and "records-write test" in piped[0]["error"]
        states = {t["name"]: t["state"] for t in piped[1]}
        assert len(states) == 302 and states.pop("load") == "failed" and states.pop("square") == "interrupted"
        assert set(states.values()) == {"done"}  # every element, settled before the agent stopped
        for rows in (unpiped, piped):  # times differ between the two runs; every other column is the same
            rows[0].pop("started"), rows[0].pop("ended")
            for task in rows[1]:
                task.pop("started"), task.pop("ended")
        assert piped == unpiped
    finally:
        store.close()
