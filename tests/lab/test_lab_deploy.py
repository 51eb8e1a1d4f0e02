"""``deploy up inventories/lab`` over ssh, for real: ssh-host and Slurm workers.

The module brings the lab site up once (cold: wheelhouse, venvs), computes
across host workers and Slurm workers, checks idempotence and health, and
ends with ``down`` leaving nothing on any host.
"""

from __future__ import annotations

import os
import socket

import pytest

from tests.conftest import run_deploy

pytestmark = pytest.mark.lab

INVENTORY = "inventories/lab"
HOSTS = ("login", "db", "node1", "node2")


def test_up_deploys_every_host_and_runs_its_checks(site):
    for host in HOSTS:
        assert any(line.startswith(host) for line in site.stdout.splitlines()), host
    assert "checks passed" in site.stdout
    assert "tls://127.0.0.1:18786" in site.stdout  # the tunnel's local end (reach: tunnel)


def test_services_run_as_toppipe_on_their_hosts(lab, site):
    for host, pattern in (("login", "toppipe.agent"), ("node1", "dask_worker"), ("node2", "dask_worker")):
        ps = lab.ssh(host, f"pgrep -u toppipe -f {pattern} || true").stdout.split()
        assert ps, f"no {pattern} on {host}"
        assert lab.ssh(host, f"pgrep -u root -f {pattern} || true").stdout.strip() == ""


def test_computes_on_ssh_host_workers(session):
    session.wait_for_workers(2)
    hosts = session.client.gather(session.client.map(lambda i: socket.gethostname(), range(30), resources={"host": 1}))
    assert set(hosts) == {"node1", "node2"}


def test_computes_on_slurm_workers_in_jobs(session, lab):
    session.scale(2, on="slurm")
    session.wait_for_workers(4, timeout=180)
    slurm = [w for w in session.workers() if w.slurm_job]
    assert len(slurm) == 2 and {w.host for w in slurm} <= {"node1", "node2"}

    def where(i):
        return socket.gethostname(), os.environ.get("SLURM_JOB_ID")

    seen = set(session.client.gather(session.client.map(where, range(40), resources={"slurm": 1})))
    assert {job for _, job in seen} == {w.slurm_job for w in slurm}
    assert {host for host, _ in seen} <= {"node1", "node2"}
    queue = lab.ssh("login", "squeue -h -u toppipe -n toppipe-lab -o %i").stdout.split()
    assert sorted(queue) == sorted(w.slurm_job for w in slurm)
    logs = lab.ssh("node1", "ls /srv/toppipe-lab/shared/lab/slurm/logs").stdout.split()
    assert {f"toppipe-lab-{job}.err" for job in queue} <= set(logs)  # job logs on the shared filesystem


def test_scheduler_refuses_plain_tcp_from_the_desktop(site, state_dir):
    from distributed import Client

    from deploy.state import read_connection

    tunnel_end = read_connection(state_dir / "lab")["scheduler"].replace("tls://", "tcp://")
    with pytest.raises(OSError):
        Client(tunnel_end, timeout=3)


def test_second_up_changes_nothing(site, state_dir):
    again = run_deploy("up", INVENTORY, state_dir=state_dir, timeout=300)
    assert again.code == 0, again.stdout + again.stderr
    assert "no changes" in again.stdout


def test_check_reports_every_host(site, state_dir):
    check = run_deploy("check", INVENTORY, state_dir=state_dir, timeout=300)
    assert check.code == 0, check.stdout + check.stderr
    for host in ("desktop", *HOSTS):
        assert host in check.stdout


@pytest.mark.lab_alone  # no python process of the lab user may be left
def test_down_cancels_slurm_jobs_and_leaves_no_process(site, state_dir, lab):
    down = run_deploy("down", INVENTORY, state_dir=state_dir, timeout=300)
    assert down.code == 0, down.stdout + down.stderr
    assert lab.ssh("login", "squeue -h -u toppipe -o %i").stdout.strip() == ""
    for host in HOSTS:
        left = lab.ssh(host, "grep -lzxE 'TOPPIPE_SERVICE=lab/.*' /proc/[0-9]*/environ 2>/dev/null || true").stdout
        assert left.strip() == "", f"{host}: {left}"
        python = lab.ssh(host, "pgrep -u toppipe -f '^[^ ]*venv/bin/python' || true").stdout
        assert python.strip() == "", f"{host}: {python}"
