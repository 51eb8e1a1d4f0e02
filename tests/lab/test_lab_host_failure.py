"""A worker host dies (``scripts/lab stop node2``): ``up`` deploys everything
else, says node2 is unreachable and exits 1; once node2 is back
(``scripts/lab start node2``, its files kept) the next ``up`` changes node2
alone, exits 0, and ``check`` passes.

Runs on the run's shared lab deployment. Needs root; brings the lab up
(scripts/lab up) when it is not.
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import run_deploy
from tests.lab.conftest import run_lab

pytestmark = [pytest.mark.lab, pytest.mark.lab_alone]  # stops node2: nothing may run beside it

INVENTORY = "inventories/lab"
HOSTS = ("desktop", "login", "db", "node1", "node2")
# progress line of one action:  "  [ 12.3s] node2        workers    <resource>   changed"
ACTION = re.compile(r"^\s+\[\s*[\d.]+s\]\s+(?P<host>\S+)\s.*\s(?P<mark>changed|ok|FAILED|skipped)$")
# summary row:  "node2                 3          9       0        0"
ROW = re.compile(r"^(?P<host>\S+)\s+(?P<changed>\d+)\s+(?P<unchanged>\d+)\s+(?P<failed>\d+)\s+(?P<skipped>\d+)$")


def summary_rows(stdout: str) -> dict[str, dict[str, int]]:
    rows = {}
    for line in stdout.splitlines():
        if m := ROW.match(line):
            rows[m["host"]] = {k: int(v) for k, v in m.groupdict().items() if k != "host"}
    return rows


def changed_hosts(stdout: str) -> list[str]:
    return [m["host"] for line in stdout.splitlines() if (m := ACTION.match(line)) and m["mark"] == "changed"]


def lab_cmd(*args: str):
    proc = run_lab(*args, timeout=300)
    assert proc.returncode == 0, f"scripts/lab {' '.join(args)}: {proc.returncode}\n{proc.stderr}{proc.stdout}"
    return proc


@pytest.fixture
def restores_node2(site, state_dir):
    """After the test node2 runs again and the shared site is whole (``up`` repairs it)."""
    yield
    start = run_lab("start", "node2", timeout=300)
    up = run_deploy("up", INVENTORY, "--no-check", state_dir=state_dir, timeout=900)
    assert start.returncode == 0, start.stderr
    assert up.code == 0, up.stdout + up.stderr


def test_up_with_a_dead_worker_host_then_after_it_is_back(lab, state_dir, restores_node2):
    lab_cmd("stop", "node2")
    status = run_lab("status", timeout=120)
    assert status.returncode == 1, status.stdout
    assert re.search(r"^node2\s+down\b", status.stdout, re.M), status.stdout

    # node2 is gone: everything else is deployed, node2 is named, exit 1
    up = run_deploy("up", INVENTORY, state_dir=state_dir, timeout=900)
    out = up.stdout + up.stderr
    assert up.code == 1, out
    assert re.search(r"^node2\s+unreachable: cannot connect: \S", up.stdout, re.M), out
    rows = summary_rows(up.stdout)
    for host in HOSTS[:-1]:
        assert host in rows and rows[host]["failed"] == 0, (host, out)
    assert "node2" not in changed_hosts(up.stdout), out
    assert lab.ssh("node1", "pgrep -u toppipe -f dask_worker || true").stdout.split(), "no dask worker on node1"
    assert lab.ssh("login", "pgrep -u toppipe -f toppipe.agent || true").stdout.split(), "no agent on login"

    # node2 is back (rebooted: its files kept, nothing of toppipe running)
    lab_cmd("start", "node2")
    assert run_lab("status", timeout=120).returncode == 0
    again = run_deploy("up", INVENTORY, state_dir=state_dir, timeout=900)
    out = again.stdout + again.stderr
    assert again.code == 0, out
    changed = changed_hosts(again.stdout)
    assert changed and set(changed) == {"node2"}, out
    rows = summary_rows(again.stdout)
    assert rows["node2"]["changed"] > 0 and rows["node2"]["failed"] == 0, out
    for host in HOSTS[:-1]:
        assert rows[host]["changed"] == 0 and rows[host]["failed"] == 0, (host, out)
    assert "unreachable" not in again.stdout, out
    assert lab.ssh("node2", "pgrep -u toppipe -f dask_worker || true").stdout.split(), "no dask worker on node2"

    check = run_deploy("check", INVENTORY, state_dir=state_dir, timeout=300)
    assert check.code == 0, check.stdout + check.stderr
