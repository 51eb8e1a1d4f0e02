"""Pure logic of runs: cache keys, what a selection submits, params, the
recorder's bookkeeping, the progress line, and the worker-side executor run
in this process (no cluster)."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

from toppipe.pipeline import Pipeline, PipelineError, TaskFailed, load, task
from toppipe.pipeline.cache import result_path
from toppipe.pipeline.execute import TaskCall, refresh_project, remember_project_modules, run_task
from toppipe.pipeline.progress import line
from toppipe.pipeline.keys import cache_keys, effective_params
from toppipe.pipeline.launch import needed
from toppipe.recorder import RunRecorder
from toppipe.records import RecordStore, init


@task
def numbers(n=3):
    return list(range(n))


@task
def total(numbers):
    return sum(numbers)


@task(after="total")
def report(numbers, label="sum"):
    return label


def demo() -> Pipeline:
    return Pipeline("demo", [numbers, total, report])


def test_cache_keys_follow_code_params_and_upstream():
    pipeline = demo()
    names = pipeline.order()
    base = cache_keys(pipeline, names, {})
    assert cache_keys(pipeline, names, {}) == base
    other = cache_keys(pipeline, names, {"n": 4})
    assert other["numbers"] != base["numbers"] and other["total"] != base["total"]
    relabelled = cache_keys(pipeline, names, {"label": "x"})
    assert relabelled["report"] != base["report"] and relabelled["total"] == base["total"]


def test_a_selection_submits_what_it_waits_for():
    pipeline = demo()
    assert needed(pipeline, only="total") == (["numbers", "total"], {"total"})
    assert needed(pipeline, downstream_of="total") == (["numbers", "total", "report"], {"total", "report"})


def test_a_required_param_must_be_given():
    pipeline = Pipeline("p")

    def scaled(factor):
        return factor

    pipeline.add(scaled)
    with pytest.raises(PipelineError, match="needs param 'factor'"):
        effective_params(pipeline, "scaled", {})
    assert effective_params(pipeline, "scaled", {"factor": 2}) == {"factor": 2}


def test_the_executor_caches_and_forces(tmp_path):
    import cloudpickle

    log = tmp_path / "calls"

    def counted(n):
        with open(log, "a") as out:  # the function travels pickled: count outside it
            out.write("x")
        return n * 2

    def calls():
        return log.read_text() if log.exists() else ""

    call = TaskCall(run="r", task="t", payload=cloudpickle.dumps(counted), key="ab" * 16, params={"n": 5}, results=str(tmp_path))
    first, second = run_task(call), run_task(call)
    assert first.value == 10 and second == first
    assert len(calls()) == 1 and Path(result_path(str(tmp_path), first.key)).is_file()
    forced = TaskCall(**{**call.__dict__, "force": True})
    assert run_task(forced) == first
    assert len(calls()) == 2


def test_a_failure_carries_the_task_and_a_traceback_with_the_source_line(tmp_path):
    import cloudpickle

    project = tmp_path / "pipelines"
    project.mkdir()
    (project / "bad.py").write_text(textwrap.dedent("""
        from toppipe.pipeline import task

        @task
        def broken():
            return 1 / 0
        """))
    pipeline = load("bad", project=tmp_path)
    func = pipeline.tasks["broken"].func
    from toppipe.pipeline.execute import source_of

    call = TaskCall(run="r", task="broken", payload=cloudpickle.dumps(func), key="cd" * 16, source=source_of(func))
    with pytest.raises(TaskFailed) as failure:
        run_task(call)
    assert failure.value.task == "broken" and "ZeroDivisionError" in failure.value.error
    assert "return 1 / 0" in failure.value.remote_traceback and "bad.py" in failure.value.remote_traceback


def test_refresh_project_reloads_a_changed_module(tmp_path):
    module = tmp_path / "toppipe_unit_helper.py"
    module.write_text("VALUE = 1\n")
    refresh_project(str(tmp_path))
    import toppipe_unit_helper

    remember_project_modules(str(tmp_path))  # what run_task does after each task
    assert toppipe_unit_helper.VALUE == 1
    time.sleep(0.01)
    module.write_text("VALUE = 2\n")
    assert "toppipe_unit_helper" in refresh_project(str(tmp_path))
    assert toppipe_unit_helper.VALUE == 2


def test_the_recorder_ends_a_run_when_its_last_task_settles(tmp_path):
    url = f"sqlite:///{tmp_path}/records.sqlite"
    init(url)
    recorder = RunRecorder(url, tmp_path / "spool")
    recorder.log_event("toppipe-run", {"run": "r1", "state": "started", "pipeline": "p", "tasks": ["a", "b"], "time": 1.0})
    for task_name, state in (("a", "running"), ("a", "running"), ("a", "done"), ("b", "running"), ("b", "cached")):
        recorder.log_event("toppipe-task", {"run": "r1", "task": task_name, "state": state, "time": 2.0, "host": "h"})
    recorder.log_event("other-topic", {"ignored": True})
    deadline = time.monotonic() + 5
    while True:
        store = RecordStore(url)
        run, tasks = store.run("r1"), {t["name"]: t for t in store.tasks("r1")}
        store.close()
        if run and run["state"] == "done":
            break
        assert time.monotonic() < deadline, run
        time.sleep(0.05)
    assert tasks["a"]["attempts"] == 2 and tasks["b"]["cached"] == 1
    assert recorder.status("r1") == {"a": "done", "b": "cached", "__run__": "done"}


def test_the_progress_line_counts_states():
    text = line("r1", {"a": "done", "b": "cached", "c": "running", "d": "pending"}, width=8)
    assert text.startswith("run r1 [####....] 2/4") and "running 1" in text and "failed 0" in text
