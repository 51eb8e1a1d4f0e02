"""A running local site survives a change whose new services cannot start.

The change: ``toppipe_python`` pointed at the system's Python, which exists
(so no load-time check can object) but has neither toppipe nor dask. The
agent's check refuses it before the running agent is touched; the workers
and JupyterLab have no check, fail at start, and their previous definitions
are started again. ``up`` exits 1 naming each refused service and why, the
site stays up, and with the change reverted the next ``up`` changes nothing.

Run under ``flock /tmp/toppipe-local.lock`` (it deploys the site "local").
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.conftest import run_deploy
from tests.inventory_copies import copy_inventory, set_host_var

pytestmark = pytest.mark.integration

SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="module")
def inventory(tmp_path_factory) -> Path:
    if not Path(SYSTEM_PYTHON).is_file():
        pytest.skip(f"needs {SYSTEM_PYTHON}")
    return copy_inventory("local", tmp_path_factory.mktemp("inventory") / "local")


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="module")
def site(inventory, state_dir):
    up = run_deploy("up", str(inventory), "--no-check", state_dir=state_dir)
    assert up.code == 0, up.stdout + up.stderr
    yield inventory
    run_deploy("down", str(inventory), "--purge", state_dir=state_dir)


def status_rows(inventory: Path, state_dir: Path) -> tuple[int, dict[str, list[str]]]:
    """``status``'s exit code and its rows by service: [host, service, state, pid, ...]."""
    status = run_deploy("status", str(inventory), state_dir=state_dir)
    rows = {line.split()[1]: line.split() for line in status.stdout.splitlines()[1:] if line.startswith("localhost ")}
    return status.code, rows


def answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return False
    return True


def test_a_change_that_cannot_start_leaves_the_site_running(site, state_dir, monkeypatch):
    code, before = status_rows(site, state_dir)
    assert code == 0 and before["scheduler"][2] == "running", before

    set_host_var(site, "localhost", "toppipe_python", SYSTEM_PYTHON)
    try:
        bad = run_deploy("up", str(site), "--no-check", state_dir=state_dir)
    finally:
        set_host_var(site, "localhost", "toppipe_python", None)
    out = bad.stdout + bad.stderr

    # exit 1, one summary line per refused service with the reason, one error line, no traceback
    assert bad.code == 1, out
    refused = {line.split()[2].rstrip(":"): line for line in bad.stdout.splitlines() if line.startswith("refused: localhost ")}
    assert set(refused) == {"scheduler", "workers", "jupyter"}, out
    assert "failed its check" in refused["scheduler"] and "No module named 'toppipe'" in refused["scheduler"], out
    assert "the running scheduler was left as it is" in refused["scheduler"]
    assert "No module named 'distributed'" in refused["workers"] and "previous definition of workers was started again" in refused["workers"]
    assert "No module named 'jupyterlab'" in refused["jupyter"]
    assert bad.stderr.count("\n") == 1 and bad.stderr.startswith("error: site local: the new definition of localhost scheduler"), bad.stderr
    assert "Traceback" not in out

    # the site is up: the agent was never stopped, the others run their previous definition again
    code, after = status_rows(site, state_dir)
    assert code == 0, after
    assert after["scheduler"][3] == before["scheduler"][3], (before, after)
    assert all(answers(port) for port in (8786, 8787, 8888))
    monkeypatch.setenv("TOPPIPE_STATE_DIR", str(state_dir))
    import toppipe

    with toppipe.connect("local") as session:
        session.wait_for_workers(2)
        assert session.client.submit(sum, [1, 2]).result(timeout=30) == 3

    # the journal has it: each refused service an event, the run its exit code and reason
    journal = sorted((state_dir / "local" / "deploys").glob("*-up"))[-1]
    events = [json.loads(line) for line in (journal / "events.jsonl").read_text().splitlines()]
    assert sorted(e["what"] for e in events if e["outcome"] == "refused") == ["start jupyter", "start scheduler", "start workers"]
    status = json.loads((journal / "status.json").read_text())
    assert status["exit_code"] == 1 and "refused" in status["error"]

    # with the change reverted there is nothing to do
    again = run_deploy("up", str(site), "--no-check", state_dir=state_dir)
    assert again.code == 0, again.stdout + again.stderr
    assert "no changes" in again.stdout, again.stdout

