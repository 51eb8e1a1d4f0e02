"""Pipelines on the lab: the weather example notebook executed by nbclient
(Slurm workers, then host workers, then its plot), and a run that survives
one of its workers being killed, with the retry in its record."""

from __future__ import annotations

import os
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
    while (state := run.status()["slow"]) != "running":
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


def test_an_edited_project_module_reaches_the_workers_through_lsyncd(session, tmp_path):
    """Saved on the desktop, synced to the shared folder, used by the next run within 2 s."""
    import secrets

    project = Path(session.record["project_local"])
    name = f"toppipe_probe_{secrets.token_hex(4)}"
    module = project / f"{name}.py"
    pipeline_file = tmp_path / "pipelines" / "probe.py"
    pipeline_file.parent.mkdir(parents=True)
    pipeline_file.write_text(f"from toppipe.pipeline import task\nimport {name}\n\n@task\ndef value():\n    return {name}.VALUE\n")
    try:
        module.write_text("VALUE = 1\n")
        time.sleep(1.0)  # lsyncd: 0.3 s delay, then rsync over its ssh master
        pipeline = session.load(pipeline_file)
        assert pipeline.run(on="hosts", force=True).wait(timeout=60).result("value") == 1
        module.write_text("VALUE = 2\n")
        saved = time.monotonic()
        time.sleep(1.0)
        result = pipeline.run(on="hosts", force=True).wait(timeout=60).result("value")
        elapsed = time.monotonic() - saved
        assert result == 2 and elapsed < 2.0, (result, elapsed)
    finally:
        module.unlink(missing_ok=True)
