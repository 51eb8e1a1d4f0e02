"""Pipelines on the real local site: runs on its workers, the result cache,
records in its store, failures with their remote traceback, and edited code
used by the next run without restarting a worker."""

from __future__ import annotations

import secrets
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, run_deploy

pytestmark = pytest.mark.integration

INVENTORY = "inventories/local"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    state = tmp_path_factory.mktemp("pipestate")
    up = run_deploy("up", INVENTORY, state_dir=state)
    assert up.code == 0, up.stdout + up.stderr
    yield state
    run_deploy("down", INVENTORY, "--purge", state_dir=state)


@pytest.fixture
def session(site, monkeypatch):
    monkeypatch.setenv("TOPPIPE_STATE_DIR", str(site))
    import toppipe

    with toppipe.connect("local") as session:
        session.wait_for_workers(1)
        yield session


@pytest.fixture
def helper_module():
    """A module of the project (the local site's project is the repository), removed afterwards."""
    name = f"toppipe_probe_{secrets.token_hex(4)}"
    path = REPO / f"{name}.py"
    path.write_text("FACTOR = 2\n\ndef scale(x):\n    return x * FACTOR\n")
    yield name, path
    path.unlink(missing_ok=True)


def write_pipeline(folder: Path, helper: str, extra: str = "") -> Path:
    path = folder / "pipelines" / "demo.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(f"""
        from toppipe.pipeline import task
        import {helper} as helper

        @task
        def numbers(n=4):
            return list(range(n))

        @task
        def scaled(numbers):
            return [helper.scale(x) for x in numbers]

        @task
        def total(scaled):
            return sum(scaled)
        """) + textwrap.dedent(extra))
    return path


def test_a_run_computes_on_the_workers_and_is_recorded(session, tmp_path, helper_module):
    pipeline = session.load(write_pipeline(tmp_path, helper_module[0]))
    run = pipeline.run(on="hosts")
    assert run.wait(timeout=60).result("total") == 12
    records = _settled_records(session, run.id)
    assert {r["name"]: r["state"] for r in records} == {"numbers": "done", "scaled": "done", "total": "done"}
    assert all(r["host"] and r["attempts"] == 1 for r in records)
    listed = session.runs(limit=5)
    assert listed[0]["id"] == run.id and listed[0]["state"] == "done"
    assert listed[0]["provenance"]["tasks"].keys() == {"numbers", "scaled", "total"}


def test_nothing_changed_recomputes_nothing_and_a_changed_task_recomputes_it_and_what_follows(session, tmp_path, helper_module):
    path = write_pipeline(tmp_path, helper_module[0])
    pipeline = session.load(path)
    pipeline.run(on="hosts").wait(timeout=60)
    again = pipeline.run(on="hosts")
    assert again.wait(timeout=60).result("total") == 12
    assert {r["name"]: r["state"] for r in _settled_records(session, again.id)} == {"numbers": "cached", "scaled": "cached", "total": "cached"}
    time.sleep(0.01)
    path.write_text(path.read_text().replace("return [helper.scale(x) for x in numbers]", "return [helper.scale(x) + 1 for x in numbers]"))
    edited = pipeline.run(on="hosts")
    assert edited.wait(timeout=60).result("total") == 16
    assert {r["name"]: r["state"] for r in _settled_records(session, edited.id)} == {"numbers": "cached", "scaled": "done", "total": "done"}


def test_an_edited_project_module_is_used_by_the_next_run_without_a_worker_restart(session, tmp_path, helper_module):
    name, module_file = helper_module
    pipeline = session.load(write_pipeline(tmp_path, name))
    workers_before = set(session.client.scheduler_info(n_workers=-1)["workers"])
    assert pipeline.run(on="hosts", force=True).wait(timeout=60).result("total") == 12
    time.sleep(0.01)
    module_file.write_text(module_file.read_text().replace("FACTOR = 2", "FACTOR = 10"))
    saved = time.monotonic()
    result = pipeline.run(on="hosts", force=True).wait(timeout=60).result("total")
    assert result == 60, "the workers ran the old helper"
    print(f"edited module used {time.monotonic() - saved:.2f} s after the save")
    assert set(session.client.scheduler_info(n_workers=-1)["workers"]) == workers_before


def test_a_failing_task_names_itself_and_its_host_with_the_remote_traceback(session, tmp_path, helper_module):
    from toppipe.pipeline import TaskFailed

    pipeline = session.load(write_pipeline(tmp_path, helper_module[0], extra="""
        @task
        def broken(total):
            return {}["missing"]
        """))
    run = pipeline.run(on="hosts")
    with pytest.raises(TaskFailed) as failure:
        run.wait(timeout=60)
    assert failure.value.task == "broken" and failure.value.host
    assert "KeyError" in failure.value.error and 'return {}["missing"]' in failure.value.remote_traceback
    record = {r["name"]: r for r in _settled_records(session, run.id)}["broken"]
    assert record["state"] == "failed" and "KeyError" in record["error"] and "missing" in record["traceback"]
    assert session.runs(limit=1)[0]["state"] == "failed"


def test_a_task_added_in_the_notebook_runs_alone_with_its_inputs_from_the_cache(session, tmp_path, helper_module):
    pipeline = session.load(write_pipeline(tmp_path, helper_module[0]))
    pipeline.run(on="hosts").wait(timeout=60)

    @pipeline.task
    def doubled(total):
        return 2 * total

    run = pipeline.run(on="hosts", only="doubled")
    assert run.wait(timeout=60).result("doubled") == 24
    states = {r["name"]: r["state"] for r in _settled_records(session, run.id)}
    assert states == {"numbers": "cached", "scaled": "cached", "total": "cached", "doubled": "done"}


def test_a_local_run_needs_no_cluster_and_is_recorded_too(session, tmp_path, helper_module):
    pipeline = session.load(write_pipeline(tmp_path, helper_module[0]))
    run = pipeline.run(on="local", force=True)
    assert run.wait(timeout=60).result("total") == 12
    assert session.runs(limit=1)[0]["id"] == run.id


def _settled_records(session, run_id: str, timeout: float = 10) -> list[dict]:
    """The run's task records once the agent wrote the last of them (it writes in small batches)."""
    deadline = time.monotonic() + timeout
    while True:
        store = session.records()
        try:
            tasks, run = store.tasks(run_id), store.run(run_id)
        finally:
            store.close()
        if run and run["state"] != "running" and all(t["state"] not in ("pending", "running") for t in tasks):
            return tasks
        assert time.monotonic() < deadline, f"run {run_id} records did not settle: {run} {tasks}"
        time.sleep(0.1)


def test_another_session_reattaches_to_a_run_by_its_id(session, site, tmp_path, helper_module):
    import toppipe

    pipeline = session.load(write_pipeline(tmp_path, helper_module[0]))
    run = pipeline.run(on="hosts", force=True)
    with toppipe.connect("local") as other:
        attached = other.run(run.id)
        assert attached.tasks == run.tasks and attached.pipeline == "demo"
        assert attached.wait(timeout=60).result("total") == 12
        assert set(attached.status().values()) <= {"done", "cached"}
