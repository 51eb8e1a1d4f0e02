"""A result is kept under what it was computed from: its code, the project modules it uses
(through a chain of calls), its inputs' results and the files it read, by content."""

from __future__ import annotations

import importlib
import os
import sys
import textwrap
import threading
import time
from pathlib import Path

import cloudpickle
import pytest

from toppipe.pipeline import Pipeline, reads, sources
from toppipe.pipeline.execute import TaskCall, TaskFailed, run_task
from toppipe.pipeline.reads import Snapshot
from toppipe.pipeline.keys import cache_keys


def _call(func, tmp_path: Path, project: Path, name: str = "t", key: str = "ab" * 16, **extra) -> TaskCall:
    return TaskCall(run="r", task=name, payload=cloudpickle.dumps(func), key=key, results=str(tmp_path / "results"),
                    project=str(project), **extra)  # fmt: skip


@pytest.fixture
def project(tmp_path) -> Path:
    folder = tmp_path / "project"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "east.csv").write_text("1\n2\n")
    (folder / "data" / "west.csv").write_text("10\n")
    return folder


@pytest.fixture
def counter(tmp_path):
    """Counts computations outside the project (the count itself must not be a tracked read)."""
    log = tmp_path / "computed"

    def seen() -> int:
        return len(log.read_text()) if log.exists() else 0

    return log, seen


def _summing(log: Path, file: str):
    def total():
        with open(log, "a") as out:
            out.write("x")
        from toppipe.pipeline import project_path

        with open(project_path("data", file)) as handle:
            return sum(int(line) for line in handle)

    return total


def test_a_changed_file_recomputes_and_putting_it_back_finds_the_old_result(tmp_path, project, counter):
    log, computed = counter
    call = _call(_summing(log, "east.csv"), tmp_path, project)
    first = run_task(call)
    assert first.value == 3 and run_task(call) == first and computed() == 1
    (project / "data" / "east.csv").write_text("1\n5\n")  # same size
    changed = run_task(call)
    assert changed.value == 6 and changed.key != first.key and computed() == 2
    (project / "data" / "east.csv").write_text("1\n2\n")
    assert run_task(call) == first and computed() == 2  # from the cache


def test_force_keeps_the_result_under_the_data_it_read(tmp_path, project, counter):
    log, computed = counter
    call = _call(_summing(log, "east.csv"), tmp_path, project)
    original = run_task(call)
    (project / "data" / "east.csv").write_text("7\n7\n")
    forced = run_task(TaskCall(**{**call.__dict__, "force": True}))
    assert forced.value == 14 and forced.key != original.key
    (project / "data" / "east.csv").write_text("1\n2\n")
    again = run_task(call)
    assert again == original and computed() == 2  # not the forced result under the original data's key


def test_a_changed_input_recomputes_what_follows_and_nothing_else(tmp_path, project, counter):
    log, computed = counter
    east, west = _call(_summing(log, "east.csv"), tmp_path, project, "east", "e" * 32), _call(_summing(log, "west.csv"), tmp_path, project, "west", "f" * 32)

    def both(east, west):
        return east + west

    combine = _call(both, tmp_path, project, "both", "c" * 32)
    first = run_task(combine, east=run_task(east), west=run_task(west))
    assert first.value == 13 and computed() == 2
    (project / "data" / "west.csv").write_text("20\n")
    second_east, second_west = run_task(east), run_task(west)
    assert computed() == 3  # only west read its file again
    second = run_task(combine, east=second_east, west=second_west)
    assert second.value == 23 and second.key != first.key


def test_listing_a_folder_counts_its_names(tmp_path, project, counter):
    log, computed = counter

    def files():
        import glob

        from toppipe.pipeline import project_path

        with open(log, "a") as out:
            out.write("x")
        return sorted(os.path.basename(p) for p in glob.glob(project_path("data", "*.csv")))

    call = _call(files, tmp_path, project)
    assert run_task(call).value == ["east.csv", "west.csv"] and run_task(call).value == ["east.csv", "west.csv"]
    assert computed() == 1
    (project / "data" / "north.csv").write_text("0\n")
    assert run_task(call).value == ["east.csv", "north.csv", "west.csv"] and computed() == 2


def test_track_counts_a_file_a_native_reader_opens(tmp_path, project):
    assert reads.track("anything") == "anything"  # outside a task: only the path
    with reads.tracking(str(project)) as seen:
        reads.track(project / "data")
    assert set(seen.manifest()) == {"project:data", "project:data/east.csv", "project:data/west.csv"}


def test_a_file_that_changes_while_the_task_runs_is_not_cached(tmp_path, project):
    path = project / "data" / "east.csv"

    def racing():
        text = open(path).read()
        path.write_text("9\n9\n9\n")  # as another process would, mid-task
        return text

    call = _call(racing, tmp_path, project)
    run_task(call)
    assert not list((tmp_path / "results").rglob("*.json"))


def test_a_synced_copy_is_waited_for_until_it_is_the_saved_version(tmp_path, project, monkeypatch):
    saved = reads.file_digest(str(project / "data" / "east.csv"))[1]
    snapshot = Snapshot({"data/east.csv": saved, "data/west.csv": reads.file_digest(str(project / "data" / "west.csv"))[1]})
    (project / "data" / "east.csv").write_text("0\n0\n")  # the copy lags behind the save

    def read():
        from toppipe.pipeline import project_path

        return open(project_path("data", "east.csv")).read()

    timer = threading.Timer(0.3, lambda: (project / "data" / "east.csv").write_text("1\n2\n"))  # lsyncd arrives
    timer.start()
    assert run_task(_call(read, tmp_path, project), snapshot).value == "1\n2\n"
    monkeypatch.setattr(reads, "SYNC_WAIT", 0.2)
    (project / "data" / "east.csv").write_text("3\n3\n")
    with pytest.raises(TaskFailed, match=r"data/east.csv on .* is not the version saved when the run started"):
        run_task(_call(read, tmp_path, project, force=True), snapshot)


def _module_chain(project: Path, value: int) -> None:
    (project / "chain_c.py").write_text(f"VALUE = {value}\n")
    (project / "chain_b.py").write_text("from chain_c import VALUE\n\ndef b():\n    return VALUE\n")
    (project / "chain_a.py").write_text("import chain_b\n\ndef a():\n    return chain_b.b()\n")


def _import_chain(project: Path):
    sys.path.insert(0, str(project))
    try:
        for name in ("chain_c", "chain_b", "chain_a"):
            sys.modules.pop(name, None)
        return importlib.import_module("chain_a")
    finally:
        sys.path.remove(str(project))


def test_the_key_follows_a_helper_two_calls_deep(project):
    _module_chain(project, 1)
    chain_a = _import_chain(project)

    def uses_a():
        return chain_a.a()

    first = sources.modules_used(uses_a, str(project))
    assert [use.name for use in first] == ["chain_c", "chain_b", "chain_a"]  # dependencies first
    (project / "chain_c.py").write_text("VALUE = 2\n")  # same size
    second = sources.modules_used(uses_a, str(project))
    assert [u.digest for u in first][1:] == [u.digest for u in second][1:] and first[0].digest != second[0].digest

    def unrelated():
        return 1

    assert sources.modules_used(unrelated, str(project)) == ()


def test_a_worker_computes_with_the_code_the_key_names(tmp_path, project, monkeypatch):
    """Six same-size edits, each run at once: every run returns its own edit's value."""
    monkeypatch.syspath_prepend(str(project))
    for value in range(2, 8):
        _module_chain(project, value)
        chain_a = _import_chain(project) if value == 2 else sys.modules["chain_a"]

        def uses_a():
            return chain_a.a()

        uses = sources.modules_used(uses_a, str(project))
        assert run_task(_call(uses_a, tmp_path, project, key=f"{value:02d}" * 16, uses=uses)).value == value


def test_a_module_that_stays_different_fails_the_task_naming_the_file(tmp_path, project, monkeypatch):
    monkeypatch.setattr(reads, "SYNC_WAIT", 0.2)
    monkeypatch.syspath_prepend(str(project))
    _module_chain(project, 1)
    chain_a = _import_chain(project)

    def uses_a():
        return chain_a.a()

    uses = sources.modules_used(uses_a, str(project))
    (project / "chain_c.py").write_text("VALUE = 9\n")  # not what the run recorded
    start = time.monotonic()
    with pytest.raises(TaskFailed, match=r"chain_c.py on .* is not the version saved"):
        run_task(_call(uses_a, tmp_path, project, uses=uses))
    assert time.monotonic() - start < 5


def test_the_snapshot_leaves_out_what_the_sync_leaves_out(project):
    (project / "__pycache__").mkdir()
    (project / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (project / ".git").mkdir()
    (project / ".git" / "HEAD").write_text("ref\n")
    (project / "tool.py").write_text(textwrap.dedent("X = 1\n"))
    taken = sources.snapshot(str(project))
    assert set(taken.files) == {"data/east.csv", "data/west.csv", "tool.py"}
    assert taken.listing("") == {"data", "tool.py"} and taken.listing("data") == {"east.csv", "west.csv"}


def test_the_key_follows_helpers_written_beside_the_task(tmp_path):
    """Helpers in the pipeline file (or a notebook) travel by value: their edits change the key."""
    from toppipe.pipeline import load
    from toppipe.pipeline.keys import cache_keys

    folder = tmp_path / "pipelines"
    folder.mkdir()

    def write(offset: int) -> dict[str, str]:
        (folder / "helpers.py").write_text(textwrap.dedent(f"""
            from toppipe.pipeline import task

            def inner(x):
                return x + {offset}

            def outer(x):
                return inner(x) * 2

            @task
            def uses_helpers(n=1):
                return outer(n)

            @task
            def plain(n=1):
                return n
            """))
        pipeline = load("helpers", project=tmp_path)
        return cache_keys(pipeline, pipeline.order(), {})

    first, second = write(1), write(2)
    assert first["uses_helpers"] != second["uses_helpers"]  # inner changed, two calls deep
    assert first["plain"] == second["plain"]


def test_an_edited_helper_three_calls_deep_changes_exactly_the_keys_of_the_tasks_that_call_it(project):
    (project / "deep_c.py").write_text("def used():\n    return 1\n\ndef unused():\n    return 2\n")
    (project / "deep_b.py").write_text("import deep_c\n\ndef b():\n    return deep_c.used()\n")
    (project / "deep_a.py").write_text("import deep_b\nimport deep_c\n\ndef a():  # calls b, which calls c.used\n"
                                       "    return deep_b.b()\n\ndef other():\n    return deep_c.unused()\n")  # fmt: skip
    sys.path.insert(0, str(project))
    try:
        deep_a = importlib.import_module("deep_a")
    finally:
        sys.path.remove(str(project))

    def calls_chain():
        return deep_a.a()

    def calls_other():
        return deep_a.other()

    def calls_nothing():
        return 0

    pipeline = Pipeline("deep", [calls_chain, calls_other, calls_nothing])
    keys = lambda: cache_keys(pipeline, pipeline.order(), {}, str(project))  # noqa: E731
    first = keys()
    (project / "deep_c.py").write_text("def used():\n    return 10\n\ndef unused():\n    return 2\n")
    second = keys()
    assert {name for name in first if first[name] != second[name]} == {"calls_chain"}
    (project / "deep_c.py").write_text("def used():\n    return 10\n\n# a comment\ndef unused():\n    return 20\n")
    third = keys()
    assert {name for name in first if second[name] != third[name]} == {"calls_other"}


def test_a_folder_put_on_sys_path_between_tasks_is_installed_code_from_the_next_task_on(project, monkeypatch):
    (project / "vendored").mkdir()
    (project / "vendored" / "lib.txt").write_text("x")

    def read_in_a_task() -> set[str]:
        with reads.tracking(str(project)) as seen:
            (project / "vendored" / "lib.txt").read_text()
        return set(seen.manifest())

    assert read_in_a_task() == {"project:vendored/lib.txt"}
    monkeypatch.syspath_prepend(str(project / "vendored"))  # the untracked roots are remembered per sys.path
    assert read_in_a_task() == set()
