"""Slurm workers rotate before their walltime without losing the computation.

A site whose Slurm jobs have a 90 s walltime runs a computation of about
two minutes on Slurm workers only: workers retire (staggered), new jobs
replace them, and the result is still right.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest
import yaml

from tests.conftest import REPO, run_deploy

pytestmark = pytest.mark.lab

SITE = "labwall"
WALLTIME_SECONDS = 90


@pytest.fixture(scope="module")
def inventory(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inv") / SITE
    shutil.copytree(REPO / "inventories" / "lab", folder)
    settings_file = folder / "group_vars" / "all.yml"
    data = yaml.safe_load(settings_file.read_text())
    settings = data["toppipe"]
    settings.update(site=SITE, ports={"scheduler": 8796, "dashboard": 8797, "jupyter": 8899})
    settings["workers"]["per_host"] = 0  # Slurm workers only
    settings["slurm"]["walltime"] = "00:01:30"
    settings["paths"]["project"] = str(REPO)
    settings_file.write_text(yaml.safe_dump(data))
    return folder


@pytest.fixture(scope="module")
def session(lab, inventory, tmp_path_factory):
    state = tmp_path_factory.mktemp("wallstate")
    up = run_deploy("up", str(inventory), "--no-check", state_dir=state, timeout=900)
    assert up.code == 0, up.stdout + up.stderr
    old = os.environ.get("TOPPIPE_STATE_DIR")
    os.environ["TOPPIPE_STATE_DIR"] = str(state)
    import toppipe

    try:
        with toppipe.connect(SITE) as session:
            yield session
    finally:
        if old is None:
            os.environ.pop("TOPPIPE_STATE_DIR", None)
        else:
            os.environ["TOPPIPE_STATE_DIR"] = old
        run_deploy("down", str(inventory), "--purge", state_dir=state, timeout=300)


def test_computation_outlives_the_walltime_of_its_workers(session):
    def slow_square(i):  # defined here so it ships by value, not by module name
        time.sleep(3)
        return i * i, os.environ.get("SLURM_JOB_ID")

    session.scale(2, on="slurm")
    session.wait_for_workers(2, timeout=120)
    first_jobs = {w.slurm_job for w in session.workers()}
    started = time.monotonic()
    futures = session.client.map(slow_square, range(70), pure=False)
    results = session.client.gather(futures)
    elapsed = time.monotonic() - started
    assert elapsed > WALLTIME_SECONDS  # the computation did outlive every first job
    assert sum(value for value, _ in results) == sum(i * i for i in range(70))
    jobs = {job for _, job in results}
    assert jobs - first_jobs, f"no replacement job did any work: {jobs}"
    assert len(jobs) >= 3
