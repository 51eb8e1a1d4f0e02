"""The lab through the client's tunnel: after ``up`` the record names only the desktop's loopback,
sessions, the dask dashboard and the records go through it, ``status`` and ``check`` list it; the
tunnel killed gives one line naming ``up``, ``up`` restores it, and a run started before the kill
finishes on the cluster and is reattached; the login node restarted (the scheduler and the
tunnel's far end gone with it) gives one line too, and after ``up`` the run it interrupted is
recorded so and its finished tasks come from the cache."""

from __future__ import annotations

import os
import secrets
import signal
import urllib.request
from urllib.parse import urlsplit

import pytest

from tests.conftest import run_deploy
from tests.interrupted import INTERRUPTIBLE, poll, recorded
from tests.lab.conftest import run_lab

pytestmark = pytest.mark.lab

INVENTORY = "inventories/lab"


def tunnel_pid(state_dir) -> int:
    return int((state_dir / "lab" / "services" / "tunnel" / "pid").read_text())


def test_the_record_names_only_local_ends_and_everything_answers_through_them(lab, state_dir, session):
    record = session.record
    assert record["reach"] == "tunnel"
    for key in ("scheduler", "dashboard"):
        assert urlsplit(record[key]).hostname == "127.0.0.1", record[key]
    assert "hostaddr=127.0.0.1" in record["records"]
    with urllib.request.urlopen(record["dashboard"], timeout=10) as page:  # the dashboard link answers
        assert page.status == 200
    assert isinstance(session.runs(limit=1), list)  # PostgreSQL through the tunnel, verify-full
    assert all(s.answering for s in session.status().services if s.name in ("scheduler", "postgres", "redis", "tunnel"))


def test_status_and_check_list_the_tunnel(lab, state_dir, site):
    status = run_deploy("status", INVENTORY, state_dir=state_dir, timeout=300)
    assert any("tunnel" in line and "desktop" in line for line in status.stdout.splitlines()), status.stdout
    check = run_deploy("check", INVENTORY, state_dir=state_dir, timeout=300)
    assert any("tunnel" in line for line in check.stdout.splitlines()), check.stdout


def test_a_killed_tunnel_gives_one_line_up_restores_it_and_the_run_goes_on(lab, state_dir, session, capfd):
    import toppipe
    from toppipe.errors import TunnelClosedError

    session.wait_for_workers(1, timeout=120)
    name = f"tunnel_probe_{secrets.token_hex(3)}"
    path = state_dir / "pipelines" / f"{name}.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text(INTERRUPTIBLE)
    run = session.load(path).run(on="hosts", params={"token": secrets.token_hex(4), "seconds": 8.0})
    poll(lambda: run.status()["slow"] == "running", 120, "slow started")

    os.kill(tunnel_pid(state_dir), signal.SIGKILL)
    with pytest.raises(TunnelClosedError) as closed:
        session.workers()
    message = str(closed.value)
    assert "\n" not in message and f"python -m deploy up {INVENTORY}" in message, message

    up = run_deploy("up", INVENTORY, state_dir=state_dir, timeout=900)
    assert up.code == 0, up.stdout + up.stderr
    with toppipe.connect("lab") as again:
        attached = again.run(run.id)
        assert attached.wait(timeout=300).result("last") == 42  # it ran on the cluster meanwhile
    printed = capfd.readouterr().err
    assert "Traceback" not in printed, printed


@pytest.mark.lab_alone  # stops login, Slurm's controller
def test_a_restarted_login_node_is_survived(lab, state_dir, session, capfd):
    from toppipe.errors import SchedulerLostError

    session.wait_for_workers(1, timeout=120)
    name = f"login_restart_{secrets.token_hex(3)}"
    path = state_dir / "pipelines" / f"{name}.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text(INTERRUPTIBLE)
    params = {"token": secrets.token_hex(4), "seconds": 30.0}
    run = session.load(path).run(on="hosts", params=params)
    poll(lambda: run.status()["slow"] == "running", 120, "slow started")

    stopped = run_lab("stop", "login", timeout=300)
    try:
        assert stopped.returncode == 0, stopped.stderr

        def lost() -> str:
            try:
                session.workers()
            except SchedulerLostError as error:
                return str(error)
            return ""

        message = poll(lost, 90, "a session call failing once login is gone")
        assert "\n" not in message and f"python -m deploy up {INVENTORY}" in message, message
    finally:
        started = run_lab("start", "login", timeout=300)
    assert started.returncode == 0, started.stderr

    up = run_deploy("up", INVENTORY, "--no-check", state_dir=state_dir, timeout=900)
    assert up.code == 0, up.stdout + up.stderr
    session.reconnect()
    session.wait_for_workers(1, timeout=120)
    recorded(session, run.id, "interrupted")  # the agent's first act: runs it did not finish
    again = session.load(path).run(on="hosts", params=params)  # what had finished comes from the cache
    assert again.wait(timeout=300).result("last") == 42
    _, tasks = recorded(session, again.id, "done")
    assert tasks["first"]["state"] == "cached" and tasks["last"]["state"] == "done", tasks
    printed = capfd.readouterr().err
    assert "Traceback" not in printed, printed
