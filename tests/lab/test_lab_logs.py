"""Logs on the lab (tunnelled, hosts behind login): a Slurm worker's job output by job id and by
the worker's name, a node's workers log, and ``deploy logs inventories/lab scheduler -f``
following the scheduler on login through the inventory's jump."""

from __future__ import annotations

import time

import pytest

from tests.conftest import line_queue, run_deploy, start_deploy
from tests.interrupted import poll

pytestmark = pytest.mark.lab

INVENTORY = "inventories/lab"


def test_a_slurm_workers_output_by_job_id_and_by_name(lab, session):
    session.scale(1, on="slurm")
    worker = poll(lambda: next((w for w in session.workers() if w.slurm_job), None), 180, "a Slurm worker joined")
    by_job = session.logs(worker.slurm_job, tail=500)
    assert f"Start worker at: {worker.address}" in " ".join(by_job.split()), by_job
    assert session.logs(worker.name, tail=500).splitlines()[0] == by_job.splitlines()[0]


def test_a_nodes_workers_log_through_the_jump(lab, session):
    text = session.logs("node1/workers", tail=20)
    assert "distributed" in text, text
    node_worker = next(w for w in session.workers() if w.host == "node1" and not w.slurm_job)
    assert session.logs(node_worker.address, tail=20)  # the same log, found by the worker's address


def test_a_bad_target_names_the_labs_targets_and_slurm_jobs(lab, state_dir, site):
    bad = run_deploy("logs", INVENTORY, "node3/workers", state_dir=state_dir, timeout=300)
    assert bad.code == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "node1/workers" in bad.stderr and "a Slurm job id" in bad.stderr


def test_following_the_scheduler_on_login(lab, state_dir, session):
    follower = start_deploy("logs", INVENTORY, "scheduler", "-n", "1", "-f", state_dir=state_dir)
    lines = line_queue(follower.stdout)
    try:
        assert lines.get(timeout=120) is not None  # started: the last line came through the jump
        probe = f"toppipe-follow-probe-{time.time_ns()}"  # a line appended after the follower started
        lab.ssh("login", f"echo {probe} >> ~/.toppipe/lab/services/scheduler/log")
        deadline = time.monotonic() + 60
        while (line := lines.get(timeout=max(0.1, deadline - time.monotonic()))) is not None and probe not in line:
            pass
        assert line is not None, "the follower ended"
    finally:
        follower.terminate()
        follower.wait(timeout=30)
    assert follower.returncode == 0, follower.stderr.read()
