"""Slurm workers rotate before their walltime without losing the computation.

A site whose Slurm jobs have a 90 s walltime runs a computation of about
two minutes on Slurm workers only (one of each Slurm pool of the lab): workers
retire (staggered), new jobs of their pool replace them, and the result is
still right.
"""

from __future__ import annotations

import os
import secrets
import time

import pytest

from tests import marked_map
from tests.conftest import run_deploy
from tests.inventory_copies import copy_lab_as_site

pytestmark = pytest.mark.lab

SITE = "labwall"
WALLTIME_SECONDS = 90


@pytest.fixture(scope="module")
def inventory(tmp_path_factory):
    ports = {"scheduler": 8796, "dashboard": 8797, "jupyter": 8899, "postgres": 5442, "redis": 6389, "app": 8061}
    return copy_lab_as_site(SITE, ports, tmp_path_factory.mktemp("inv") / SITE,
                            workers={"per_host": 0},  # Slurm workers only
                            slurm={"walltime": "00:01:30"})


@pytest.fixture(scope="module")
def session(lab, inventory, tmp_path_factory):
    state = tmp_path_factory.mktemp("wallstate")
    old = os.environ.get("TOPPIPE_STATE_DIR")
    import toppipe

    try:  # down also after a failed up: what it started must not outlive the test
        up = run_deploy("up", str(inventory), "--no-check", state_dir=state, timeout=900)
        assert up.code == 0, up.stdout + up.stderr
        os.environ["TOPPIPE_STATE_DIR"] = str(state)
        with toppipe.connect(SITE) as session:
            yield session
    finally:
        if old is None:
            os.environ.pop("TOPPIPE_STATE_DIR", None)
        else:
            os.environ["TOPPIPE_STATE_DIR"] = old
        run_deploy("down", str(inventory), "--purge", state_dir=state, timeout=300)


def test_computation_outlives_the_walltime_of_its_workers_in_each_pool(session):
    """A worker of each Slurm pool (batch and bigmem): both pools rotate, each with jobs of its own partition."""

    def slow_square(i):  # defined here so it ships by value, not by module name
        time.sleep(3)
        return i * i, os.environ.get("SLURM_JOB_ID"), os.environ.get("SLURM_JOB_PARTITION")

    session.scale(1, pool="slurm")
    session.scale(1, pool="bigmem")
    session.wait_for_workers(2, timeout=120)
    first_jobs = {w.slurm_job for w in session.workers()}
    started = time.monotonic()
    futures = session.client.map(slow_square, range(70), pure=False)
    results = session.client.gather(futures)
    elapsed = time.monotonic() - started
    assert elapsed > WALLTIME_SECONDS  # the computation did outlive every first job
    assert sum(value for value, _, _ in results) == sum(i * i for i in range(70))
    replacements = {(job, partition) for _, job, partition in results if job not in first_jobs}
    assert {partition for _, partition in replacements} == {"batch", "bigmem"}, f"a pool did not rotate: {results}"
    session.scale(0, pool="bigmem")


def test_a_map_across_the_walltime_loses_no_finished_element_and_computes_none_twice(lab, session, tmp_path):
    """Issue 16: Slurm workers that reach their walltime in the middle of a map: every element is
    computed exactly once (a mark per computation, on the shared folder), the result is right."""
    size = 100  # longer than the walltime, however many spares work while they replace the first jobs
    folder = f"{lab.data['shared_path']}/{SITE}/marks-{secrets.token_hex(4)}"
    lab.ssh("login", f"mkdir -p {folder}")
    path = marked_map.write(tmp_path / "pipelines")
    session.scale(2, on="slurm")
    session.wait_for_workers(2, timeout=120)
    first_jobs = {w.slurm_job for w in session.workers()}
    try:
        started = time.monotonic()
        run = session.load(path).run(on="slurm", params={"n": size, "folder": folder})
        assert run.wait(timeout=600).result("total") == sum(i**3 for i in range(size))
        assert time.monotonic() - started > WALLTIME_SECONDS  # it did outlive the first jobs
        marks = lab.ssh("login", f"cd {folder} && for f in *; do echo $f $(wc -c < $f); done").stdout.split("\n")
        counts = {int(name): int(n) for name, n in (line.split() for line in marks if line.strip())}
        assert sorted(counts) == list(range(size)), sorted(counts)
        assert {i: n for i, n in counts.items() if n != 1} == {}, "elements computed more than once"
        jobs = {r["slurm_job"] for r in run.records() if r["name"].startswith("slow_cube[")}
        assert jobs - first_jobs, f"no replacement job computed an element: {jobs}"
    finally:
        lab.ssh("login", f"rm -rf {folder}", check=False)
