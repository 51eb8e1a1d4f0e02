"""The lab up and running survives an ``up`` whose new services cannot start.

The change, in a copy of the lab's inventory: ``toppipe_python:
/usr/bin/python3`` on ``login`` and on ``node1``, a Python that exists in
the images but has no dask. On login the agent's check (its new
configuration read by its own code, in the new environment) refuses the
change before the running agent is touched, and the agent's configuration
file is put back; on node1 the new worker dies at start and the previous
worker is started again. ``up`` exits 1 naming both and why, ``status``
says the site runs, a session computes on both workers, and with the
change reverted the next ``up`` restarts nothing.

Needs root; brings the lab up (scripts/lab up) when it is not. Run under
``flock /tmp/toppipe-lab.lock``.
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import run_deploy
from tests.inventory_copies import copy_inventory, set_host_var

pytestmark = pytest.mark.lab

SYSTEM_PYTHON = "/usr/bin/python3"
BAD_HOSTS = ("login", "node1")
AGENT_CONFIG = ".toppipe/lab/etc/agent.yaml"


def service_pid(lab, host: str, service: str) -> str:
    return lab.ssh(host, f"cat .toppipe/lab/services/{service}/pid").stdout.strip()


def test_an_up_whose_new_services_cannot_start_leaves_the_old_ones_answering(lab, site, state_dir, tmp_path, monkeypatch):
    inventory = copy_inventory("lab", tmp_path / "lab")
    agent_pid = service_pid(lab, "login", "scheduler")
    agent_config = lab.ssh("login", f"sha256sum {AGENT_CONFIG}").stdout

    for host in BAD_HOSTS:
        set_host_var(inventory, host, "toppipe_python", SYSTEM_PYTHON)
    bad = run_deploy("up", str(inventory), "--no-check", state_dir=state_dir, timeout=900)
    for host in BAD_HOSTS:
        set_host_var(inventory, host, "toppipe_python", None)
    out = bad.stdout + bad.stderr
    print(out)  # shown with -s: the refused lines as a user reads them

    # exit 1, one line per refused service (host, service, why), one error line, no traceback
    assert bad.code == 1, out
    refused = {tuple(line.split()[1:3]): line for line in bad.stdout.splitlines() if line.startswith("refused: ")}
    assert set(refused) == {("login", "scheduler:"), ("node1", "workers:")}, out
    assert "failed its check" in refused[("login", "scheduler:")] and "the running scheduler was left as it is" in out, out
    assert re.search(r"cannot import \w+; the agent needs the site's Python environment", refused[("login", "scheduler:")]), out
    assert "No module named" in refused[("node1", "workers:")], out
    assert "the previous definition of workers was started again" in refused[("node1", "workers:")], out
    assert bad.stderr.count("\n") == 1 and "was refused and the previous one still runs" in bad.stderr, bad.stderr
    assert "Traceback" not in out

    # the old agent never stopped and reads its own configuration; node1's worker is back; the site runs
    assert service_pid(lab, "login", "scheduler") == agent_pid
    assert lab.ssh("login", f"sha256sum {AGENT_CONFIG}").stdout == agent_config
    status = run_deploy("status", "inventories/lab", state_dir=state_dir)
    assert status.code == 0, status.stdout
    monkeypatch.setenv("TOPPIPE_STATE_DIR", str(state_dir))
    import toppipe

    with toppipe.connect("lab") as session:
        session.wait_for_workers(2, timeout=120)
        assert {w.host for w in session.workers()} == {"node1", "node2"}
        assert session.client.submit(sum, [1, 2], workers=[w.address for w in session.workers() if w.host == "node1"]).result(timeout=60) == 3

    # the change reverted: no service restarts
    again = run_deploy("up", str(inventory), "--no-check", state_dir=state_dir, timeout=900)
    assert again.code == 0, again.stdout + again.stderr
    print(again.stdout)
    restarted = [line for line in again.stdout.splitlines() if re.search(r"\sstart \S+\s+changed$", line)]
    assert restarted == [], again.stdout
    assert service_pid(lab, "login", "scheduler") == agent_pid


def postgres_check(state_dir, monkeypatch) -> tuple[str, object]:
    """The db host and the real spec of its PostgreSQL, as ``up`` builds it."""
    monkeypatch.setenv("TOPPIPE_STATE_DIR", str(state_dir))
    from deploy import lifecycle
    from deploy.engine import get_engine
    from deploy.inventory import load_site
    from deploy.state import site_files

    site = load_site("inventories/lab")
    with get_engine() as engine:
        ctxs = lifecycle.contexts(engine, site, site_files(site))
    return next((h, s) for h, _, s in lifecycle.services_by_role(site, ctxs) if s.name == "postgres")


def test_postgres_settings_are_checked_beside_the_running_server(lab, site, state_dir, monkeypatch):
    """The database's check (``postgres -C`` with the new settings) runs while the old server runs,
    passes for the site's settings and names a setting the server rejects."""
    import dataclasses

    from deploy.runtime import ApptainerRuntime

    host, spec = postgres_check(state_dir, monkeypatch)
    pid = service_pid(lab, host, "postgres")
    good = lab.ssh(host, ApptainerRuntime().check_command(spec), check=False)
    assert good.returncode == 0, good.stdout + good.stderr
    bad = dataclasses.replace(spec, check_argv=(*spec.check_argv, "-c", "shared_buffers=lots"))
    refused = lab.ssh(host, ApptainerRuntime().check_command(bad), check=False)
    assert refused.returncode != 0 and 'invalid value for parameter "shared_buffers"' in refused.stderr, refused.stderr
    assert service_pid(lab, host, "postgres") == pid  # the running server was not touched
