"""What the interrupted-run tests share: a pipeline with a slow middle task, and polling the records."""

from __future__ import annotations

import textwrap
import time

#: first (quick) -> slow (running when the scheduler is killed) -> last; last returns 42.
INTERRUPTIBLE = textwrap.dedent("""
    import time
    from toppipe.pipeline import task

    @task
    def first(token=""):
        return 20

    @task
    def slow(first, seconds=5.0):
        time.sleep(seconds)
        return first + 1

    @task
    def last(slow):
        return slow * 2
    """)


def poll(check, timeout: float, what: str):
    """*check()* once it is true; fail naming *what* after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(0.2)
    return found


def records_of(session, run_id: str) -> tuple[dict | None, dict[str, dict]]:
    """The run's record and its tasks' records, by name."""
    store = session.records()
    try:
        return store.run(run_id), {t["name"]: t for t in store.tasks(run_id)}
    finally:
        store.close()


def recorded(session, run_id: str, state: str, timeout: float = 60) -> tuple[dict, dict[str, dict]]:
    """The run's records once the run is recorded in *state* (the agent writes in batches)."""
    return poll(lambda: (found := records_of(session, run_id))[0] is not None and found[0]["state"] == state and found,
                timeout, f"run {run_id} recorded {state}")  # fmt: skip


def wait_interrupted(run, site: str) -> str:
    """``run.wait()`` raises the one-line error that names the run and says how to go on; its text."""
    import pytest

    from toppipe.errors import RunInterruptedError

    with pytest.raises(RunInterruptedError) as interrupted:
        run.wait(timeout=60)
    message = str(interrupted.value)
    assert "\n" not in message and message.startswith(f"run {run.id} was interrupted: the scheduler of site {site} is gone")
    assert f"python -m deploy up inventories/{site}" in message, message
    assert f"toppipe.connect('{site}').run('{run.id}').resume()" in message, message
    return message
