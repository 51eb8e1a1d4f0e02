"""The local site's services start side by side and stop together, for real: the first ``up``
launches the scheduler, JupyterLab and the dashboard before any of them is ready (the workers
once the scheduler answers), a service that cannot start fails ``up`` with its one line while
the others run as reported, and ``down`` leaves no process of the site."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, marked_pids, run_deploy

pytestmark = pytest.mark.integration

INDEPENDENT = ("scheduler", "jupyter", "dashboard")


def _inventory(tmp_path: Path, site: str, base: int) -> Path:
    """inventories/local as site *site* with ports of its own, from *base* (one set per test: a port
    the test before closed may still be held by its connections' TIME_WAIT)."""
    folder = tmp_path / "inventories" / site
    shutil.copytree(REPO / "inventories" / "local", folder)
    settings_file = folder / "group_vars" / "all.yml"
    settings = yaml.safe_load(settings_file.read_text())
    settings["toppipe"]["site"] = site
    settings["toppipe"]["ports"] = {"scheduler": base + 786, "dashboard": base + 787, "jupyter": base + 888, "app": base + 50}
    settings["toppipe"]["paths"]["project"] = str(REPO)
    settings_file.write_text(yaml.safe_dump(settings))
    return folder


def _journal(state: Path, site: str, command: str) -> list[dict]:
    """The events of the newest journal of *command*."""
    folder = sorted((state / site / "deploys").glob(f"*-{command}"))[-1]
    return [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]


def _ended(events: list[dict], what: str) -> float:
    return next(e["time"] for e in events if e["what"] == what)


def _launched(state: Path, site: str, service: str) -> float:
    """When *service*'s process was launched: its pid file is written right after."""
    return (state / site / "services" / service / "pid").stat().st_mtime


def _statuses(inventory: Path, state: Path) -> dict[str, str]:
    status = run_deploy("status", str(inventory), state_dir=state)
    return {line.split()[1]: line.split()[2] for line in status.stdout.splitlines()[1:] if line.startswith("localhost ")}


def test_independent_services_start_side_by_side_and_down_leaves_nothing(tmp_path):
    site, state = "sidebyside", tmp_path / "state"
    inventory = _inventory(tmp_path, site, 28000)
    try:
        up = run_deploy("up", str(inventory), state_dir=state)
        assert up.code == 0, up.stdout + up.stderr
        for name in ("scheduler", "workers", "jupyter", "dashboard"):  # one line per action, as before
            assert any(f"start {name}" in line and "changed" in line for line in up.stdout.splitlines()), up.stdout
        events = _journal(state, site, "up")
        launched = {name: _launched(state, site, name) for name in (*INDEPENDENT, "workers")}
        for name in INDEPENDENT:  # each was launched before every other one had finished starting
            for other in INDEPENDENT:
                assert launched[name] < _ended(events, f"start {other}"), (name, other, launched, events[-4:])
        assert launched["workers"] > launched["scheduler"]
        assert set(_statuses(inventory, state).values()) == {"running"}
    finally:
        down = run_deploy("down", str(inventory), state_dir=state)
    assert down.code == 0, down.stdout + down.stderr
    assert all(f"stop {name}" in down.stdout for name in (*INDEPENDENT, "workers"))
    assert marked_pids(site) == []


def test_a_service_that_cannot_start_fails_up_and_its_dependents_are_not_started(tmp_path):
    site, state = "sidebyfail", tmp_path / "state"
    inventory = _inventory(tmp_path, site, 29000)
    try:
        with socket.socket() as squatter:  # bound, not listening: the port looks free, and the scheduler cannot have it
            squatter.bind(("127.0.0.1", 29786))
            up = run_deploy("up", str(inventory), state_dir=state)
        assert up.code == 1, up.stdout + up.stderr
        lines = up.stdout.splitlines()
        failures = [line for line in lines if line.startswith("failed: ")]  # the summary: one line per failure
        assert len(failures) == 1 and failures[0].startswith("failed: localhost scheduler: start scheduler: "), up.stdout
        assert "Traceback" not in up.stdout + up.stderr
        assert any("start workers" in line and line.rstrip().endswith("skipped") for line in lines), up.stdout
        for name in ("jupyter", "dashboard"):
            assert any(f"start {name}" in line and line.rstrip().endswith("changed") for line in lines), up.stdout
        statuses = _statuses(inventory, state)  # what up said is what runs
        assert statuses == {"scheduler": "stopped", "workers": "stopped", "jupyter": "running", "dashboard": "running"}, statuses
        assert not (state / site / "connection.json").exists()
    finally:
        down = run_deploy("down", str(inventory), state_dir=state)
    assert down.code == 0, down.stdout + down.stderr
    assert marked_pids(site) == []
