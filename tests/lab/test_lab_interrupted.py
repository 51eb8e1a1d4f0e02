"""Interrupted runs on the lab: the scheduler killed on login in the middle of a run (one-line
error, ``interrupted`` in PostgreSQL after ``up``, resumed from another session with the finished
tasks from the cache), and PostgreSQL stopped on db in the middle of a run (no task event lost).

PostgreSQL stays stopped for ``TOPPIPE_TEST_PG_DOWN_SECONDS`` (default 10 s, short for the suite;
the issue's acceptance asks for a minute: set it to 60)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, run_deploy
from tests.interrupted import INTERRUPTIBLE, poll, recorded, records_of, wait_interrupted

pytestmark = pytest.mark.lab

INVENTORY = "inventories/lab"
PG_DOWN_SECONDS = float(os.environ.get("TOPPIPE_TEST_PG_DOWN_SECONDS", "10"))
PROJECT = REPO / "examples"  # the lab's project folder (mirrored to the hosts by lsyncd)

#: Start or stop one service as deploy does (the dashboard's service buttons run the same code).
SERVICE_ACTION = """
import sys
from deploy import lifecycle
from deploy.engine import get_engine
from deploy.inventory import load_site
from deploy.resources import Action, Service
from deploy.state import site_files

inventory, host, name, running = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "start"
site = load_site(inventory)
with get_engine() as engine:
    ctxs = lifecycle.contexts(engine, site, site_files(site))
    found = [(h, r, s) for h, r, s in lifecycle.services_by_role(site, ctxs) if h == host and s.name == name]
    report = engine.apply(site, [Action(h, r, Service(s, running=running)) for h, r, s in found])
sys.exit(0 if found and report.ok else 1)
"""


def service(state_dir, host: str, name: str, action: str) -> None:
    env = {**os.environ, "TOPPIPE_STATE_DIR": str(state_dir)}
    done = subprocess.run([sys.executable, "-c", SERVICE_ACTION, INVENTORY, host, name, action], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, f"{action} {name} on {host}: {done.stdout}{done.stderr}"


@pytest.fixture
def pipeline_file():
    """A pipeline in the lab's project, so that another session can load it again by name."""
    name = f"interrupt_probe_{secrets.token_hex(3)}"
    path = PROJECT / "pipelines" / f"{name}.py"
    path.write_text(INTERRUPTIBLE)
    yield name
    path.unlink(missing_ok=True)


def test_a_killed_scheduler_interrupts_the_run_and_another_session_resumes_it(lab, state_dir, session, pipeline_file, capfd):
    import toppipe
    from toppipe.errors import ToppipeError

    session.wait_for_workers(2)
    token = secrets.token_hex(4)
    run = session.load(pipeline_file).run(on="hosts", params={"token": token})
    poll(lambda: run.status()["slow"] == "running", 120, "slow started")
    killed = time.time()
    lab.ssh("login", "pkill -KILL -f '^[^ ]*python[^ ]* -m toppipe[.]agent '")

    wait_interrupted(run, "lab")
    print(f"the error came {time.time() - killed:.2f} s after the kill")

    up = run_deploy("up", INVENTORY, state_dir=state_dir, timeout=900)
    if up.code != 0 and "service workers  FAILED" in up.stdout:
        # host workers close themselves some seconds after they lost their scheduler: an up right
        # after the kill can see one still closing, and the next up starts it again
        up = run_deploy("up", INVENTORY, state_dir=state_dir, timeout=900)
    assert up.code == 0, up.stdout + up.stderr
    found, tasks = recorded(session, run.id, "interrupted")
    assert {n: t["state"] for n, t in tasks.items()} == {"first": "done", "slow": "interrupted", "last": "interrupted"}
    assert found["ended"] == tasks["slow"]["started"] and found["ended"] <= killed

    with toppipe.connect("lab") as other:
        other.wait_for_workers(1, timeout=120)
        attached = other.run(run.id)
        with pytest.raises(ToppipeError, match="changed since .*pass the run's params="):
            attached.resume()  # the records keep the keys, not the params: the run's differ from the defaults
        resumed = attached.resume(params={"token": token})
        assert resumed.id != run.id and resumed.wait(timeout=300).result("last") == 42
        _, again = recorded(other, resumed.id, "done")
    assert again["first"]["state"] == "cached" and again["last"]["state"] == "done"
    assert again["slow"]["state"] in ("done", "cached")  # cached if its old worker finished it after the loss
    printed = capfd.readouterr().err
    assert "Traceback" not in printed and "Failed to reconnect" not in printed, printed


def test_no_task_event_is_lost_while_postgresql_is_stopped(lab, state_dir, session):
    takes = ['token=""'] + [f"step{i}" for i in range(7)]  # each step takes the one before
    chain = "\n".join(f"@task\ndef step{i}({takes[i]}):\n    time.sleep(1.5)\n    return {i}\n" for i in range(8))
    path = state_dir / "pipelines" / "chain.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text("import time\nfrom toppipe.pipeline import task\n\n" + chain)
    session.wait_for_workers(1)
    run = session.load(path).run(on="hosts", params={"token": secrets.token_hex(4)})
    poll(lambda: run.status()["step0"] in ("done", "cached"), 120, "step0 done")
    service(state_dir, "db", "postgres", "stop")
    stopped = time.monotonic()
    spool = "$(find ~ -maxdepth 8 -type f -path '*records-spool/events.jsonl' 2>/dev/null | head -1)"
    poll(lambda: lab.ssh("login", f"stat -c %s {spool} 2>/dev/null || echo 0").stdout.strip() not in ("", "0"),
         60, "events kept in the agent's spool while PostgreSQL is stopped")  # fmt: skip
    time.sleep(max(0.0, PG_DOWN_SECONDS - (time.monotonic() - stopped)))  # the outage itself, by design
    print(f"PostgreSQL stopped for {time.monotonic() - stopped:.1f} s; run states then: {run.status()}")
    service(state_dir, "db", "postgres", "start")
    back = time.monotonic()
    assert run.wait(timeout=120).result("step7") == 7
    found, tasks = recorded(session, run.id, "done")
    def all_done():
        tasks = records_of(session, run.id)[1]
        return all(t["state"] == "done" for t in tasks.values()) and tasks

    tasks = poll(all_done, 60, "every task recorded done")
    print(f"records complete {time.monotonic() - back:.1f} s after PostgreSQL was back")
    assert sorted(tasks) == [f"step{i}" for i in range(8)]
    for name, record in tasks.items():
        assert record["attempts"] == 1 and record["host"] and record["started"] and record["ended"] >= record["started"], record
    assert found["ended"] >= max(t["ended"] for t in tasks.values())
    poll(lambda: lab.ssh("login", f"stat -c %s {spool}").stdout.strip() == "0", 30, "the spool drained")
