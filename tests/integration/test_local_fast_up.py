"""The fast path of ``up`` on the local site, for real: a converged site is known so from one
round trip, and drift by hand (an edited file, a killed service, a file an Ansible role
manages removed) is still repaired.

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


def last_journal_events(state_dir: Path, site: str = "local") -> list[dict]:
    newest = sorted((state_dir / site / "deploys").iterdir())[-1]
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


def test_an_ansible_role_runs_only_when_its_inputs_changed_or_what_it_manages_drifted(tmp_path):
    """A copy of the local inventory with an Ansible role (a template, a command): the role runs
    on the first up, not on a converged one nor beside other drift, and again when the file it
    manages is removed by hand (plan sees it first) or its inputs change."""
    from tests.integration.test_local_ansible import TASKS, _inventory

    folder = _inventory(tmp_path, "ansfast", TASKS)
    state = tmp_path / "state"
    greeting = state / "ansfast" / "greeting.txt"

    def deploy(*args: str) -> str:
        done = run_deploy(*args, str(folder), state_dir=state, timeout=300)
        assert done.code == 0, done.stdout + done.stderr
        return done.stdout

    try:
        first = deploy("up", "--no-check")
        assert "localhost: ansible role greet runs: no record of an earlier run" in first and greeting.exists(), first
        again = deploy("up", "--no-check", "-v")
        assert CONVERGED in again and "the greeting file" not in again, again
        greet = [e for e in last_journal_events(state, "ansfast") if e["role"] == "greet"]
        assert [(e["what"], e["outcome"]) for e in greet] == [("ansible role greet", "unchanged")], greet

        greeting.unlink()
        drift = f"drift: {greeting} missing"
        plan = deploy("plan")
        assert f"localhost: ansible role greet runs: {drift}" in plan and "greet      the greeting file" in plan, plan
        assert not greeting.exists()
        repaired = deploy("up", "--no-check")
        assert f"localhost: full run: {drift} (ansible role greet)" in repaired and "greet      the greeting file" in repaired, repaired
        assert greeting.read_text() == "hello world from ansfast\n"
        assert CONVERGED in deploy("up", "--no-check")

        (state / "ansfast" / "etc" / "agent.yaml").write_text("# edited by hand\n")
        other = deploy("up", "--no-check")
        assert "localhost: full run: file" in other and "localhost: ansible role greet not run: inputs unchanged" in other, other
        assert "the greeting file" not in other

        (folder / "roles" / "greet" / "defaults" / "main.yml").write_text("greet_whom: everyone\n")
        changed = deploy("up", "--no-check")
        assert "localhost: ansible role greet runs: its inputs changed" in changed, changed
        assert greeting.read_text() == "hello everyone from ansfast\n"
    finally:
        run_deploy("down", str(folder), "--purge", state_dir=state, timeout=300)

