"""A run whose scheduler is killed in the middle, on the real local site: the session raises
one toppipe error naming the run, the next ``up`` brings the agent back and it records the run
``interrupted``, and ``run.resume()`` takes what had finished from the cache and computes only
the rest."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import time

import pytest

from tests.conftest import run_deploy
from tests.integration.test_local_pipelines import session, site  # noqa: F401 - the same real local site
from tests.interrupted import INTERRUPTIBLE, poll, recorded, wait_interrupted

pytestmark = pytest.mark.integration

INVENTORY = "inventories/local"


def write_pipeline(folder) -> str:
    path = folder / "pipelines" / "interruptible.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(INTERRUPTIBLE)
    return str(path)


@pytest.fixture
def dask_client_log():
    """What dask's client logs (past the filters on its logger, as its own handler would get it)."""
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger = logging.getLogger("distributed.client")
    logger.addHandler(handler)
    yield seen
    logger.removeHandler(handler)


def test_a_killed_scheduler_interrupts_the_run_which_resume_finishes_from_the_cache(site, session, capfd, dask_client_log):
    from toppipe.errors import RunInterruptedError, SchedulerLostError

    pipeline = session.load(write_pipeline(site))
    run = pipeline.run(on="hosts", params={"token": secrets.token_hex(4)})
    poll(lambda: run.status()["slow"] == "running", 60, "slow started")
    agent = int((site / "local" / "services" / "scheduler" / "pid").read_text())
    killed = time.time()
    os.kill(agent, signal.SIGKILL)

    wait_interrupted(run, "local")
    print(f"the error came {time.time() - killed:.2f} s after the kill")
    with pytest.raises(RunInterruptedError):
        run.status()
    with pytest.raises(SchedulerLostError, match="the scheduler of site local is gone"):
        session.workers()
    poll(lambda: session.client.status == "closed", 60, "the client gave up reconnecting")  # dask logs that: quieted
    assert not [line for line in dask_client_log if "reconnect" in line], dask_client_log

    up = run_deploy("up", INVENTORY, state_dir=site)
    assert up.code == 0, up.stdout + up.stderr
    found, tasks = recorded(session, run.id, "interrupted")
    assert {name: t["state"] for name, t in tasks.items()} == {"first": "done", "slow": "interrupted", "last": "interrupted"}
    assert found["ended"] == tasks["slow"]["started"] and found["ended"] <= killed  # last seen: its newest event

    resumed = run.resume()  # reconnects the session first
    assert resumed.id != run.id and resumed.wait(timeout=120).result("last") == 42
    _, again = recorded(session, resumed.id, "done")
    # first had finished: from the cache; last had not: computed. slow was running when the scheduler died:
    # computed again, or cached if its worker finished it meanwhile (results are kept by content, not by run)
    assert again["first"]["state"] == "cached" and again["last"]["state"] == "done"
    assert again["slow"]["state"] in ("done", "cached")

    output = capfd.readouterr()
    assert "Traceback" not in output.err and "Failed to reconnect" not in output.err, output.err
