"""Pipelines on the lab: the weather example notebook executed by nbclient
(Slurm workers, then host workers, then its plot), and a run that survives
one of its workers being killed, with the retry in its record."""

from __future__ import annotations

import os
import secrets
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.lab

EXAMPLES = REPO / "examples"


def test_the_weather_notebook_runs_on_slurm_and_host_workers_and_plots(site, state_dir, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(EXAMPLES / "weather.ipynb", as_version=4)
    env = {"TOPPIPE_STATE_DIR": str(state_dir), "TOPPIPE_SITE": "lab"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits them
    plot = EXAMPLES / "weather.png"
    plot.unlink(missing_ok=True)
    try:
        NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(EXAMPLES)}}).execute()
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    outputs = {i: "".join(o.get("text", "") for o in cell.get("outputs", [])) for i, cell in enumerate(notebook.cells)}
    summary = next(text for text in outputs.values() if "'warmest'" in text)
    assert "'stations': 4" in summary, summary
    assert plot.is_file() and plot.stat().st_size > 10_000
    plot.unlink()


def test_a_run_survives_a_killed_worker_and_records_the_retry(lab, session, tmp_path):
    path = tmp_path / "pipelines" / "slow.py"
    path.parent.mkdir(parents=True)
    path.write_text(
        "import time\nfrom toppipe.pipeline import task\n\n"
        "@task\ndef parts(n=4):\n    return list(range(n))\n\n"
        "@task\ndef slow(parts, seconds=6):\n    time.sleep(seconds)\n    return [p * p for p in parts]\n\n"
        "@task\ndef total(slow):\n    return sum(slow)\n"
    )
    session.wait_for_workers(2)
    pipeline = session.load(path)
    run = pipeline.run(on="hosts", force=True)
    deadline = time.monotonic() + 60
    while run.status()["slow"] != "running":
        assert time.monotonic() < deadline, f"slow never started: {run.status()}"
        time.sleep(0.2)
    host = next(r["host"] for r in run.records() if r["name"] == "slow")
    # kill the worker process (the nanny's child, started by multiprocessing) running the task
    lab.ssh(host, "pkill -KILL -n -u toppipe -f multiprocessing")
    assert run.wait(timeout=180).result("total") == 14
    deadline = time.monotonic() + 10
    while True:
        record = {r["name"]: r for r in run.records()}["slow"]
        if record["state"] == "done" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert record["state"] == "done" and record["attempts"] >= 2, record


def test_the_records_are_in_postgresql(session):
    runs = session.runs(limit=5)
    assert runs and session.record["records"].startswith("postgresql://")
    assert Path(session.record["results"]).parts[:3] == ("/", "srv", "toppipe-lab")


def test_a_map_runs_element_by_element_on_slurm_workers_then_all_from_the_cache(session, tmp_path):
    """Issue 16 on the lab: a map over 10,000 elements on two Slurm workers, every element right and
    recorded on a Slurm job; the same run again computes nothing."""
    size = 10_000
    path = tmp_path / "pipelines" / "wide_slurm.py"
    path.parent.mkdir(parents=True)
    path.write_text(textwrap.dedent("""
        from toppipe.pipeline import task

        @task
        def items(n=10, token=""):
            return list(range(n))

        @task(map="items")
        def cubed(items):
            return items ** 3

        @task
        def total(cubed):
            return sum(cubed)
        """))
    token = secrets.token_hex(4)  # a run of its own: nothing in the cache yet
    session.scale(2, on="slurm")
    try:
        deadline = time.monotonic() + 180
        while sum(1 for w in session.workers() if w.slurm_job) < 2:
            assert time.monotonic() < deadline, f"two Slurm workers did not join: {session.workers()}"
            time.sleep(0.5)
        pipeline = session.load(path)
        first = pipeline.run(on="slurm", params={"n": size, "token": token})
        assert first.wait(timeout=600).result("total") == sum(i**3 for i in range(size))
        deadline = time.monotonic() + 30  # the agent writes the records in batches
        while len(elements := [r for r in first.records() if r["name"].startswith("cubed[") and r["state"] == "done"]) < size:
            assert time.monotonic() < deadline, f"{len(elements)} of {size} elements recorded done"
            time.sleep(0.2)
        assert all(r["slurm_job"] for r in elements), [r for r in elements if not r["slurm_job"]][:3]
        again = pipeline.run(on="slurm", params={"n": size, "token": token})
        assert again.wait(timeout=300).result("total") == sum(i**3 for i in range(size))
        deadline = time.monotonic() + 30
        while (states := {r["state"] for r in again.records()}) != {"cached"}:
            assert time.monotonic() < deadline, f"a fully cached run computed something: {states}"
            time.sleep(0.2)
    finally:
        session.scale(0, on="slurm")
