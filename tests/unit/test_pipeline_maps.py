"""Maps (``@task(map=...)``): the graph's rules, the order groups are submitted in, and
per-element caching, run here (``on="local"``, no cluster) against a results folder."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import pytest

from toppipe.pipeline import Pipeline, PipelineError, task
from toppipe.pipeline.fanout import MapError, stages
from toppipe.pipeline.launch import start

calls: Counter = Counter()


@task
def values(given=(1, 2, 3)):
    calls["values"] += 1
    return list(given)


@task(map="values")
def doubled(values):
    calls["doubled"] += 1
    return 2 * values


@task(map="doubled")
def plus_one(doubled, offset=1):
    calls["plus_one"] += 1
    return doubled + offset


@task
def total(plus_one):
    calls["total"] += 1
    return plus_one


def run(tmp_path, pipeline, **options):
    session = SimpleNamespace(record={"results": str(tmp_path / "results")})
    calls.clear()
    found = start(session, pipeline, on="local", **options).wait()
    return found.result("total"), dict(calls)


def test_a_map_chain_runs_per_element_and_a_collect_sees_them_in_order(tmp_path):
    pipeline = Pipeline("maps", [values, doubled, plus_one, total])
    assert run(tmp_path, pipeline) == ([3, 5, 7], {"values": 1, "doubled": 3, "plus_one": 3, "total": 1})
    assert run(tmp_path, pipeline) == ([3, 5, 7], {})  # everything from the cache
    changed = run(tmp_path, pipeline, params={"given": [1, 20, 3]})
    assert changed == ([3, 41, 7], {"values": 1, "doubled": 1, "plus_one": 1, "total": 1})
    assert run(tmp_path, pipeline, params={"offset": 2})[1] == {"plus_one": 3, "total": 1}


def test_a_map_names_one_of_its_inputs_and_takes_no_other_mapped_task(tmp_path):
    @task(map="nothing")
    def stray(values):
        return values

    with pytest.raises(PipelineError, match=r"task 'stray' maps over 'nothing', which is not one of its inputs \(values\)"):
        Pipeline("p", [values, stray])

    @task(map="values")
    def pair(values, doubled):
        return values

    with pytest.raises(PipelineError, match=r"task 'pair' takes the mapped task 'doubled' beside its map over 'values'"):
        Pipeline("p", [values, doubled, pair])
    with pytest.raises(PipelineError, match="map= takes the name of one input"):
        task(map=["values"])


def test_a_group_is_submitted_after_everything_its_tasks_wait_for():
    upstream = {"a": (), "m1": ("a",), "count": ("m1",), "limit": (), "m2": ("m1", "limit"), "end": ("m2", "count")}
    maps = {"m1": "a", "m2": "m1"}
    assert stages(upstream, maps, list(upstream)) == [["a"], ["limit"], ["m1", "m2"], ["count"], ["end"]]
    looped = {"a": (), "m1": ("a",), "count": ("m1",), "m2": ("m1", "count")}
    with pytest.raises(MapError, match="wait for each other's results"):
        stages(looped, maps, list(looped))


def test_an_element_gets_its_record_from_its_first_event(tmp_path):
    from toppipe.records import RecordStore, init

    url = f"sqlite:///{tmp_path}/records.sqlite"
    init(url)
    store = RecordStore(url)
    try:
        store.write([("toppipe-run", {"run": "r", "state": "started", "pipeline": "p", "tasks": ["m"], "time": 1.0}),
                     ("toppipe-task", {"run": "r", "task": "m[0]", "state": "running", "time": 2.0, "host": "h"}),
                     ("toppipe-task", {"run": "r", "task": "m[0]", "state": "done", "time": 3.0, "result_key": "k"}),
                     ("toppipe-task", {"run": "r", "task": "m[1]", "state": "cached", "time": 3.0, "result_key": "k1"})])  # fmt: skip
        found = {t["name"]: (t["state"], t["attempts"], t["cache_key"]) for t in store.tasks("r")}
    finally:
        store.close()
    assert found == {"m": ("pending", 0, None), "m[0]": ("done", 1, "k"), "m[1]": ("cached", 0, "k1")}


def test_an_element_that_fails_once_runs_again_and_retries_is_a_count(tmp_path):
    marker = tmp_path / "failed-once"  # (the function travels pickled: a file outlives each copy)

    @task(map="values", retries=1)
    def flaky(values):
        if values == 2 and not marker.exists():
            marker.touch()
            raise RuntimeError("once")
        return values

    @task
    def total(flaky):
        return flaky

    assert run(tmp_path, Pipeline("retry", [values, flaky, total]))[0] == [1, 2, 3] and marker.exists()
    with pytest.raises(PipelineError, match="retries= takes a count"):
        task(retries=-1)


def test_with_on_error_continue_a_failed_element_is_left_out_and_computed_again_next_run(tmp_path):
    fixed = tmp_path / "fixed"

    @task(map="values", on_error="continue")
    def picky(values):
        if values == 2 and not fixed.exists():
            raise ValueError("two")
        return values

    @task(map="picky")
    def tenfold(picky):
        return 10 * picky

    @task
    def total(tenfold):
        return tenfold

    pipeline = Pipeline("picky", [values, picky, tenfold, total])
    assert run(tmp_path, pipeline)[0] == [10, 30]  # the element 2 failed and was left out
    fixed.touch()
    assert run(tmp_path, pipeline)[0] == [10, 20, 30]
    with pytest.raises(PipelineError, match="on_error= is 'fail' or 'continue'"):
        task(on_error="skip")
