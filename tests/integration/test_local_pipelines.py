"""Pipelines on the real local site: runs on its workers, the result cache,
records in its store, failures with their remote traceback, and edited code
used by the next run without restarting a worker."""

from __future__ import annotations

import contextlib
import pickle
import secrets
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, run_deploy, until

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
            # the run first: its end is written with or after its tasks' states, so once it is read
            # settled, its tasks read next are too (read the other way, a run written whole between
            # the two reads gave no task and a settled run)
            run = store.run(run_id)
            tasks = store.tasks(run_id)
        finally:
            store.close()
        if run and run["state"] != "running" and tasks and all(t["state"] not in ("pending", "running") for t in tasks):
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


def test_a_run_goes_on_after_the_session_that_started_it_closed(site, monkeypatch, tmp_path):
    import toppipe

    monkeypatch.setenv("TOPPIPE_STATE_DIR", str(site))
    gate = tmp_path / "gate"
    path = tmp_path / "pipelines" / "gated.py"
    path.parent.mkdir(parents=True)
    path.write_text(textwrap.dedent("""
        import os
        import time

        from toppipe.pipeline import task

        @task
        def opened(gate=""):
            deadline = time.monotonic() + 60  # the test opens the gate once the session closed
            while not os.path.exists(gate) and time.monotonic() < deadline:
                time.sleep(0.05)
            return os.path.exists(gate)

        @task
        def reported(opened):
            return "through the gate" if opened else "never opened"
        """))
    with toppipe.connect("local") as first:
        run_id = first.load(path).run(on="hosts", params={"gate": str(gate)}).id
    gate.touch()  # the client that held the run's futures is gone
    with toppipe.connect("local") as second:
        assert second.run(run_id).wait(timeout=60).result("reported") == "through the gate"


def test_a_map_over_ten_thousand_elements_then_cached_then_one_changed_element(session, tmp_path):
    size = 10_000
    path = tmp_path / "pipelines" / "wide.py"
    path.parent.mkdir(parents=True)
    path.write_text(textwrap.dedent("""
        from toppipe.pipeline import task

        @task
        def items(n=10, changed=-1):
            return [100_000 + i if i == changed else i for i in range(n)]

        @task(map="items")
        def squared(items):
            return items * items

        @task
        def collected(squared):
            return squared
        """))
    pipeline = session.load(path)

    def computed(params):
        run = pipeline.run(on="hosts", params=params)
        result = run.wait(timeout=120).result("collected")
        states = {}
        for record in _settled_records(session, run.id, timeout=30):
            states.setdefault(record["state"], set()).add(record["name"])
        return result, {state: names for state, names in states.items() if state != "cached"}, len(states.get("cached", ()))

    result, done, cached = computed({"n": size})
    assert result == [i * i for i in range(size)]
    assert done == {"done": {"items", "squared", "collected", *(f"squared[{i}]" for i in range(size))}} and cached == 0
    result, done, cached = computed({"n": size})
    assert result == [i * i for i in range(size)] and done == {} and cached == size + 3
    result, done, cached = computed({"n": size, "changed": 7})
    assert result[7] == 100_007**2 and result[:7] + result[8:] == [i * i for i in range(size) if i != 7]
    assert done == {"done": {"items", "squared", "squared[7]", "collected"}} and cached == size - 1  # (items: its param)


def test_a_task_that_fails_once_is_retried_and_recorded_with_two_attempts(session, tmp_path):
    path = tmp_path / "pipelines" / "flaky.py"
    path.parent.mkdir(parents=True)
    path.write_text(textwrap.dedent(f"""
        from pathlib import Path
        from toppipe.pipeline import task

        @task(retries=1)
        def flaky(nonce={secrets.token_hex(4)!r}):
            marker = Path({str(tmp_path / "failed-once")!r})
            if not marker.exists():
                marker.touch()
                raise RuntimeError("the first attempt fails")
            return "second"
        """))
    run = session.load(path).run(on="hosts")
    assert run.wait(timeout=60).result("flaky") == "second"
    (record,) = _settled_records(session, run.id)
    assert (record["state"], record["attempts"]) == ("done", 2), record


def test_failed_elements_are_listed_with_their_traceback_and_retry_failed_computes_only_them(session, tmp_path):
    fixed = tmp_path / "fixed"
    path = tmp_path / "pipelines" / "picky.py"
    path.parent.mkdir(parents=True)
    path.write_text(textwrap.dedent(f"""
        from pathlib import Path
        from toppipe.pipeline import task

        @task
        def items(n=20, nonce={secrets.token_hex(4)!r}):
            return list(range(n))

        @task(map="items", on_error="continue")
        def checked(items):
            if items % 7 == 3 and not Path({str(fixed)!r}).exists():
                raise ValueError(f"bad element {{items}}")
            return items

        @task
        def kept(checked):
            return checked
        """))
    run = session.load(path).run(on="hosts")
    assert len(run.wait(timeout=60).result("kept")) == 17
    _settled_records(session, run.id)
    failed = sorted(run.failed(), key=lambda f: f["name"])
    assert [f["name"] for f in failed] == ["checked[10]", "checked[17]", "checked[3]"], failed
    assert all("ValueError: bad element" in f["traceback"] and f["host"] for f in failed), failed
    assert [f["inputs"] for f in failed] == ["items=10", "items=17", "items=3"], failed
    fixed.touch()
    again = run.retry_failed()
    assert again.wait(timeout=60).result("kept") == list(range(20))
    states = {r["name"]: r["state"] for r in _settled_records(session, again.id) if r["name"].startswith("checked[")}
    assert sorted(n for n, s in states.items() if s == "done") == ["checked[10]", "checked[17]", "checked[3]"]
    assert sum(s == "cached" for s in states.values()) == 17


def test_a_slow_element_times_out_is_retried_and_with_continue_is_listed_with_its_input(session, tmp_path):
    attempts = tmp_path / "attempts"
    path = tmp_path / "pipelines" / "slow.py"
    path.parent.mkdir(parents=True)
    path.write_text(textwrap.dedent(f"""
        import time
        from toppipe.pipeline import task

        @task
        def items(n=8, nonce={secrets.token_hex(4)!r}):
            return list(range(n))

        @task(map="items", timeout=1, retries=1, on_error="continue")
        def doubled(items):
            if items == 5:
                with open({str(attempts)!r}, "a") as log:
                    log.write("x")
                for _ in range(600):  # a minute, unless its timeout stops it
                    time.sleep(0.1)
            return 2 * items

        @task
        def kept(doubled):
            return doubled
        """))
    started = time.monotonic()
    run = session.load(path).run(on="hosts")
    assert run.wait(timeout=60).result("kept") == [2 * i for i in range(8) if i != 5]
    assert time.monotonic() - started < 30
    records = {r["name"]: r for r in _settled_records(session, run.id)}
    assert (records["doubled[5]"]["state"], records["doubled[5]"]["attempts"]) == ("failed", 2), records["doubled[5]"]
    assert attempts.read_text() == "xx"
    assert sorted(n for n, r in records.items() if r["state"] == "done" and n.startswith("doubled[")) == [
        f"doubled[{i}]" for i in range(8) if i != 5
    ]
    (failed,) = run.failed()
    assert (failed["name"], failed["inputs"]) == ("doubled[5]", "items=5"), failed
    assert failed["error"].startswith("TaskTimeout: task doubled[5] ran longer than its timeout of 1 s"), failed
    assert "time.sleep(0.1)" in failed["traceback"] and str(path) in failed["traceback"] and failed["host"], failed


@contextlib.contextmanager
def received(client):
    """The pickled size of everything *client* gathers (what a future's ``result()`` brings here)."""
    sizes: list[int] = []
    original = client._gather

    async def counting(*args, **kwargs):
        found = await original(*args, **kwargs)
        sizes.append(len(pickle.dumps(found)))
        return found

    client._gather = counting
    try:
        yield sizes
    finally:
        del client._gather  # the class's again


def test_a_map_s_results_stay_on_the_workers_or_in_the_cache_until_asked_for(session, tmp_path):
    import toppipe

    size, width = 3000, 2000  # 6 MB of elements: one is 2 kB
    path = tmp_path / "pipelines" / "big.py"
    path.parent.mkdir(parents=True)
    path.write_text(textwrap.dedent(f"""
        from toppipe.pipeline import task

        @task
        def items(n={size}, nonce={secrets.token_hex(4)!r}):
            return list(range(n))

        @task(map="items")
        def padded(items):
            return (items, str(items).rjust({width}, "x"))  # (a string of its own: pickled whole every time)

        @task
        def collected(padded):
            return [index for index, _ in padded]
        """))
    expected = [(i, str(i).rjust(width, "x")) for i in range(size)]
    pipeline = session.load(path)
    run = pipeline.run(on="hosts").wait(timeout=120)
    assert run.result("collected") == list(range(size))  # a collect still gets the whole list, in order
    with received(session.client) as sizes:
        found = run.result("padded")
        assert len(found) == size and sum(sizes) < 1000, sizes  # the count only
        assert found[7] == expected[7] and found[-1] == expected[-1] and sum(sizes) < 3 * width + 1000, sizes
        assert found[100:103] == expected[100:103] and found[::1000] == expected[::1000]
        assert sum(sizes) < 8 * width + 2000 and found.fetched == 8, sizes
        assert list(found) == expected and found.fetched == 8 + size
        assert sum(sizes) > size * width and len(sizes) <= 4 + 4 + size // 1000 + 1, len(sizes)  # in batches

    again = pipeline.run(on="hosts").wait(timeout=120)  # from the cache
    with received(session.client) as sizes:
        found = again.result("padded")
        assert len(found) == size and found[-2] == expected[-2] and sum(sizes) < width + 2000, sizes
    records = _settled_records(session, again.id, timeout=30)
    assert sum(r["state"] == "cached" for r in records) == size + 3

    with toppipe.connect("local") as other:  # another notebook: from the cache, read by a worker
        attached = other.run(run.id).wait(timeout=60)
        with received(other.client) as sizes:
            found = attached.result("padded")
            assert len(found) == size and sum(sizes) == 0, sizes
            assert found[5] == expected[5] and found[-1] == expected[-1] and sum(sizes) < 2 * width + 1000, sizes
            assert found[2990:] == expected[2990:] and "<MapResults of padded: 3000 elements [(0, " in repr(found)


def test_cancelling_a_map_run_stops_its_elements_too(session, tmp_path):
    """The elements a map's group task sent from its worker are cancelled with the run (the
    agent's toppipe.run_cancel): without it they computed on after the run said cancelled."""
    from tests import marked_map

    marks = tmp_path / "marks"
    marks.mkdir()
    run = session.load(marked_map.write(tmp_path / "pipelines")).run(on="hosts", params={"n": 8, "folder": str(marks)}, force=True)
    assert until(lambda: any(marks.iterdir()), 60), "no element started"
    run.cancel()

    def run_keys_processing():
        return [k for keys in session.client.processing().values() for k in keys if f"-{run.id}-" in str(k)]

    assert until(lambda: not run_keys_processing(), 10), run_keys_processing()
    assert until(lambda: not any(session.client.run(lambda dask_worker: len(dask_worker.state.executing)).values()), 10)
    assert run.status()["slow_cube"] == "cancelled"
    computed = len(list(marks.iterdir()))
    assert computed <= 4, f"{computed} of 8 elements computed, most after the run was cancelled"
