"""What a run does once instead of once per task: a factory's functions hashed and read once
(a wrapper's still by the function it wraps), the project's modules looked at once per run."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import cloudpickle

from toppipe.pipeline import Pipeline, Task
from toppipe.pipeline.execute import TaskCall, refresh_project, remember_project_modules, run_task, source_of
from toppipe.pipeline.keys import cache_keys


def test_the_first_task_of_each_run_reloads_a_changed_module_once(tmp_path):
    module = tmp_path / "toppipe_unit_per_run.py"
    module.write_text("VALUE = 1\n")
    refresh_project(str(tmp_path))
    import toppipe_unit_per_run

    remember_project_modules(str(tmp_path))

    def read_value():
        return toppipe_unit_per_run.VALUE

    def call(run):
        return TaskCall(run=run, task="t", payload=cloudpickle.dumps(read_value), key="ef" * 16, project=str(tmp_path))

    assert run_task(call("first")).value == 1
    time.sleep(0.01)
    module.write_text("VALUE = 2\n")
    assert run_task(call("first")).value == 1  # a run's tasks use the modules its first task found
    assert run_task(call("second")).value == 2  # the next run reloads the edited one


def _factory(n):
    def made(i=n):
        return i

    return made


def _wrapped(func):
    @functools.wraps(func)
    def wrapper(**kwargs):
        return func(**kwargs)

    return wrapper


def _one():
    return 1


def _two():
    return 2


def test_tasks_made_by_one_factory_share_their_code_digest_and_wrappers_do_not():
    made = Pipeline("made", [Task(name=f"t{i}", func=_factory(i)) for i in range(3)])
    assert len(set(cache_keys(made, made.order(), {}).values())) == 3  # the params differ
    same = Pipeline("same", [Task(name=f"t{i}", func=_factory(0)) for i in range(2)])
    assert len(set(cache_keys(same, same.order(), {}).values())) == 1
    wrapped = Pipeline("wrapped", [Task(name="one", func=_wrapped(_one)), Task(name="two", func=_wrapped(_two))])
    keys = cache_keys(wrapped, wrapped.order(), {})
    assert keys["one"] != keys["two"]  # one wrapper's code, two functions' sources
    assert "return 1" in source_of(_wrapped(_one))[1] and "return 2" in source_of(_wrapped(_two))[1]


def test_a_result_is_kept_in_folders_the_first_store_makes(tmp_path):
    from toppipe.pipeline import cache

    results = tmp_path / "results"
    first = cache.store(str(results), "ab" * 16, {}, {}, 1)
    second = cache.store(str(results), "ab" * 16, {"x": "k"}, {}, 2)
    assert cache.load(str(results), first) == 1 and cache.load(str(results), second) == 2
    assert cache.lookup(str(results), "ab" * 16, {"x": "k"}, lambda reads: True) == (second, 2)
    assert not [p for p in results.rglob(".tmp-*")]


def test_a_store_of_the_same_bytes_leaves_the_kept_files_and_other_bytes_replace_them(tmp_path):
    from toppipe.pipeline import cache

    results = str(tmp_path / "results")
    found = cache.store(results, "cd" * 16, {}, {}, [1, 2])
    kept = Path(cache.result_path(results, found))
    variant = kept.parent.parent / "cd" / f"{'cd' * 16}.variants" / f"{found}.json"
    inodes = (kept.stat().st_ino, variant.stat().st_ino)
    assert cache.store(results, "cd" * 16, {}, {}, [1, 2]) == found  # a forced run of the same code
    assert (kept.stat().st_ino, variant.stat().st_ino) == inodes
    assert cache.store(results, "cd" * 16, {}, {}, [3]) == found  # (a task whose value varies)
    assert kept.stat().st_ino != inodes[0] and cache.load(results, found) == [3]
    assert cache.lookup(results, "cd" * 16, {}, lambda reads: True) == (found, [3])
