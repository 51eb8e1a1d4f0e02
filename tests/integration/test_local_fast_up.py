"""The fast path of ``up`` on the local site, for real: a converged site is known so from one
round trip, and drift by hand (an edited file, a killed service) is still repaired.

Run under ``flock /tmp/toppipe-local.lock`` (it deploys the site "local").
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from deploy.converged import FAST, RECORD_NAME
from tests.conftest import run_deploy

pytestmark = pytest.mark.integration

INVENTORY = "inventories/local"
CONVERGED = f"localhost: {FAST}"


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="module")
def root(state_dir) -> Path:
    first = run_deploy("up", INVENTORY, "--no-check", state_dir=state_dir)
    assert first.code == 0, first.stdout + first.stderr
    assert "localhost: full run: no record of an earlier up" in first.stdout, first.stdout
    yield state_dir / "local"
    run_deploy("down", INVENTORY, "--purge", state_dir=state_dir)


def up(state_dir: Path) -> str:
    done = run_deploy("up", INVENTORY, "--no-check", state_dir=state_dir)
    assert done.code == 0, done.stdout + done.stderr
    return done.stdout


def last_journal_events(state_dir: Path) -> list[dict]:
    newest = sorted((state_dir / "local" / "deploys").iterdir())[-1]
    return [json.loads(line) for line in (newest / "events.jsonl").read_text().splitlines()]


def marked(pid: int) -> bool:
    """Whether *pid* is still a process of a site (a zombie has no environment left)."""
    try:
        return b"TOPPIPE_SERVICE=" in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


def test_a_converged_site_is_unchanged_from_one_round_trip(root, state_dir):
    assert (root / RECORD_NAME).stat().st_mode & 0o777 == 0o600
    out = up(state_dir)
    assert CONVERGED in out and "no changes" in out, out
    events = last_journal_events(state_dir)
    assert events and all(e["outcome"] == "unchanged" and e["message"] == FAST for e in events), events
    plan = run_deploy("plan", INVENTORY, state_dir=state_dir)
    assert plan.code == 0 and "up would make 0 changes" in plan.stdout, plan.stdout + plan.stderr


def test_a_file_edited_by_hand_is_restored(root, state_dir):
    config = root / "etc" / "agent.yaml"
    wanted = config.read_bytes()
    config.write_bytes(wanted + b"# edited by hand\n")
    out = up(state_dir)
    assert f"localhost: full run: file {config} differs" in out and "1 change," in out, out
    assert config.read_bytes() == wanted
    assert CONVERGED in up(state_dir)


def test_a_killed_service_is_started_again(root, state_dir):
    pid = int((root / "services" / "workers" / "pid").read_text())
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while marked(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    out = up(state_dir)
    assert "localhost: full run: workers: would start" in out and "start workers" in out, out
    assert int((root / "services" / "workers" / "pid").read_text()) != pid
    assert CONVERGED in up(state_dir)


def test_down_forgets_the_record(root, state_dir):
    down = run_deploy("down", INVENTORY, state_dir=state_dir)
    assert down.code == 0, down.stdout + down.stderr
    assert not (root / RECORD_NAME).exists()
    out = up(state_dir)
    assert "localhost: full run: no record of an earlier up" in out and "start scheduler" in out, out
