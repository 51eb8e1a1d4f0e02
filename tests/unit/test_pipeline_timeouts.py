"""Timeouts per task (``@task(timeout=...)``) and failed tasks' inputs: the option's checks, the
timed call on its own, and runs here (``on="local"``, no cluster) against a results folder."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from toppipe.pipeline import Pipeline, PipelineError, task
from toppipe.pipeline.execute import INPUT_LIMIT, TaskFailed, short_inputs
from toppipe.pipeline.launch import start
from toppipe.pipeline.timeouts import TaskTimeout, call_within


@pytest.mark.parametrize("bad", [0, -1, "5", True, float("nan"), float("inf"), [1]])
def test_a_timeout_is_a_number_of_seconds_above_zero(bad):
    with pytest.raises(PipelineError, match=r"^timeout= takes seconds \(a number above 0\), not "):
        task(timeout=bad)


def test_a_task_keeps_its_timeout_as_seconds():
    @task(timeout=2)
    def one():
        return 1

    pipeline = Pipeline("p", [one])
    assert pipeline.tasks["one"].timeout == 2.0 and isinstance(pipeline.tasks["one"].timeout, float)

    @pipeline.task(timeout=0.5)
    def two():
        return 2

    assert pipeline.tasks["two"].timeout == 0.5 and Pipeline("q", [task(lambda: 0, name="z")]).tasks["z"].timeout is None


def _body_thread(name: str) -> threading.Thread | None:
    return next((t for t in threading.enumerate() if t.name == f"toppipe-task-{name}"), None)


def test_a_body_within_its_timeout_returns_and_its_errors_pass_through():
    assert call_within(lambda: 42, 5, "quick") == 42
    assert call_within(lambda: 43, None, "untimed") == 43

    def broken():
        raise KeyError("k")

    with pytest.raises(KeyError):
        call_within(broken, 5, "broken")


def test_a_python_loop_past_its_timeout_is_stopped_even_if_it_catches_exceptions():
    def spin():
        while True:
            try:
                sum(range(100))
            except Exception:  # a task's own handler must not keep it alive
                pass

    started = time.monotonic()
    with pytest.raises(TaskTimeout, match=r"^task spin\[3\] ran longer than its timeout of 0.2 s") as caught:
        call_within(spin, 0.2, "spin[3]")
    assert 0.2 <= time.monotonic() - started < 2
    assert "in spin" in caught.value.stack  # where it was: the task's own frame
    deadline = time.monotonic() + 5
    while _body_thread("spin[3]") is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _body_thread("spin[3]") is None


def test_a_body_waiting_in_c_runs_on_until_the_call_returns_and_its_result_is_dropped():
    returned = threading.Event()

    def sleepy():
        time.sleep(1.0)
        returned.set()  # (Abandoned is raised at the first instruction after the sleep: never reached)
        return "late"

    with pytest.raises(TaskTimeout):
        call_within(sleepy, 0.2, "sleepy")
    assert _body_thread("sleepy") is not None  # still in time.sleep
    deadline = time.monotonic() + 5
    while _body_thread("sleepy") is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _body_thread("sleepy") is None and not returned.is_set()


def test_inputs_are_shown_short_with_a_maps_element_first():
    assert short_inputs({"values": 3}, {"offset": 1}, first="values") == "values=3, offset=1"
    assert short_inputs({"rows": list(range(10_000)), "items": "x" * 1000}, {}, first="items").startswith("items='xxx")
    long = short_inputs({f"input{i}": "y" * 70 for i in range(10)}, {})
    assert len(long) == INPUT_LIMIT and long.endswith("...")

    class Broken:
        def __repr__(self):
            raise RuntimeError("no repr")

    assert short_inputs({"thing": Broken()}, {}).startswith("thing=<Broken instance at ")


@task
def values(given=(1, 2, 3)):
    return list(given)


def _run(tmp_path, pipeline, **options):
    session = SimpleNamespace(record={"results": str(tmp_path / "results")})
    return start(session, pipeline, on="local", **options)


def test_a_slow_element_fails_the_run_naming_itself_its_timeout_and_its_input(tmp_path):
    @task(map="values", timeout=0.3)
    def slow(values):
        if values == 2:
            while True:
                pass
        return values

    @task
    def total(slow):
        return slow

    with pytest.raises(TaskFailed) as caught:
        _run(tmp_path, Pipeline("slow", [values, slow, total])).wait(timeout=30)
    failure = caught.value
    assert failure.task == "slow[1]" and failure.inputs == "values=2"
    assert failure.error.startswith("TaskTimeout: task slow[1] ran longer than its timeout of 0.3 s")
    assert "while True" in failure.remote_traceback and "inputs: values=2" in str(failure)


def test_a_timed_out_element_is_retried_and_with_continue_left_out(tmp_path):
    attempts = tmp_path / "attempts"

    @task(map="values", timeout=0.3, retries=1, on_error="continue")
    def slow(values):
        if values == 2:
            with attempts.open("a") as log:
                log.write("x")
            time.sleep(0.6)
        return 10 * values

    @task
    def total(slow):
        return slow

    run = _run(tmp_path, Pipeline("slow", [values, slow, total]))
    assert run.wait(timeout=30).result("total") == [10, 30]
    assert attempts.read_text() == "xx"  # two attempts, each past its timeout


def test_a_task_error_under_a_timeout_shows_the_tasks_own_traceback(tmp_path):
    @task(timeout=5)
    def raising(values):
        raise ValueError("nope")

    with pytest.raises(TaskFailed) as caught:
        _run(tmp_path, Pipeline("raising", [values, raising]), force=True).wait(timeout=30)
    text = caught.value.remote_traceback
    assert text.splitlines()[1].strip().endswith("in raising"), text  # the first frame is the task's
    assert "toppipe/pipeline/" not in text and len([line for line in text.splitlines() if line.startswith("  File ")]) == 1
    assert caught.value.inputs == "values=[1, 2, 3]"


def test_a_failed_tasks_inputs_are_recorded_until_it_runs_again(tmp_path):
    from toppipe.records import RecordStore, init

    url = f"sqlite:///{tmp_path}/records.sqlite"
    init(url)
    store = RecordStore(url)
    try:
        store.write([("toppipe-run", {"run": "r", "state": "started", "pipeline": "p", "tasks": ["m"], "time": 1.0}),
                     ("toppipe-task", {"run": "r", "task": "m[4]", "state": "running", "time": 2.0, "host": "h"}),
                     ("toppipe-task", {"run": "r", "task": "m[4]", "state": "failed", "time": 3.0, "error": "E",
                                       "traceback": "T", "inputs": "items=4"})])  # fmt: skip
        failed = {t["name"]: t["inputs"] for t in store.tasks("r")}
        store.write([("toppipe-task", {"run": "r", "task": "m[4]", "state": "running", "time": 4.0, "host": "h"})])
        again = {t["name"]: t["inputs"] for t in store.tasks("r")}
    finally:
        store.close()
    assert failed == {"m": None, "m[4]": "items=4"} and again["m[4]"] is None
