"""A map's results fetched lazily (:class:`toppipe.pipeline.elements.MapResults`): the sequence's
logic against a fetcher that counts what it hands over, the worker-side fetches, and what
``run.result`` returns for a mapped task of a local run and of a run attached from its records."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest

from toppipe.pipeline import Pipeline, PipelineError, cache, elements, task
from toppipe.pipeline.elements import MapResults
from toppipe.pipeline.launch import start
from toppipe.pipeline.runs import attach


class Fetcher:
    """Hands out ``10 * i`` for each index, at most *most* per call, and remembers every call."""

    def __init__(self, most: int | None = None):
        self.calls: list[range] = []
        self.most = most

    def __call__(self, indexes: range) -> list:
        self.calls.append(indexes)
        return [10 * i for i in indexes][: self.most]

    @property
    def handed(self) -> int:
        return sum(len(r) if self.most is None else min(len(r), self.most) for r in self.calls)


def results(length=2500, most=None, batch=1000):
    fetch = Fetcher(most)
    return MapResults("squared", length, fetch, lambda n: [repr(10 * i) for i in range(n)], batch=batch), fetch


def test_len_fetches_nothing_and_one_index_fetches_one_element():
    found, fetch = results()
    assert len(found) == 2500 and fetch.calls == []
    assert found[7] == 70 and found[-1] == 24990 and found[-2500] == 0
    assert fetch.calls == [range(7, 8), range(2499, 2500), range(0, 1)] and found.fetched == 3


def test_out_of_range_and_bad_indexes_raise_like_a_list():
    found, fetch = results(length=3)
    with pytest.raises(IndexError, match="squared has 3 results"):
        found[3]
    with pytest.raises(IndexError):
        found[-4]
    with pytest.raises(TypeError, match="integers or slices, not str"):
        found["a"]
    assert fetch.calls == []


def test_slices_fetch_only_their_elements_in_batches():
    found, fetch = results()
    assert found[10:13] == [100, 110, 120] and fetch.calls == [range(10, 13)]
    fetch.calls.clear()
    assert found[::1000] == [0, 10000, 20000] and fetch.calls == [range(0, 2500, 1000)]
    fetch.calls.clear()
    assert found[-3:] == [24970, 24980, 24990]
    assert found[5:2] == [] and found[::-1][:2] == [24990, 24980]
    assert found[0:2500] == [10 * i for i in range(2500)]
    assert [len(r) for r in fetch.calls[-3:]] == [1000, 1000, 500]  # a big slice: batch by batch


def test_iteration_fetches_batch_by_batch_and_stops_when_the_loop_does():
    found, fetch = results()
    assert list(found) == [10 * i for i in range(2500)]
    assert fetch.calls == [range(0, 1000), range(1000, 2000), range(2000, 2500)]
    fetch.calls.clear()
    for value in found:
        if value == 30:
            break
    assert fetch.calls == [range(0, 1000)]
    assert list(reversed(found))[:2] == [24990, 24980]


def test_a_fetch_that_returns_fewer_elements_than_asked_is_continued_from_there():
    found, fetch = results(length=10, most=3)
    assert list(found) == [10 * i for i in range(10)]
    assert [r.start for r in fetch.calls] == [0, 3, 6, 9] and found.fetched == 10


def test_a_fetch_that_returns_nothing_raises_instead_of_looping():
    found = MapResults("squared", 5, lambda indexes: [])
    with pytest.raises(PipelineError, match="returned nothing"):
        list(found)


def test_contains_index_count_and_equality_use_the_elements():
    found, _ = results(length=30)
    assert 50 in found and 55 not in found
    assert found.index(50) == 5 and found.index(50, 2, 10) == 5 and found.count(50) == 1
    with pytest.raises(ValueError):
        found.index(50, 6)
    assert found == [10 * i for i in range(30)] and found != [0] and found != list(range(30))
    assert found == results(length=30)[0] and found != "not a list"


def test_the_repr_shows_the_count_and_the_first_few_elements():
    found, fetch = results()
    assert repr(found) == "<MapResults of squared: 2500 elements [0, 10, 20, ...]>" and fetch.calls == []
    assert repr(results(length=2)[0]) == "<MapResults of squared: 2 elements [0, 10]>"
    assert repr(MapResults("empty", 0, Fetcher())) == "<MapResults of empty: 0 elements>"

    def broken(count):
        raise OSError("the cluster is gone")

    assert repr(MapResults("squared", 1, Fetcher(), broken)) == "<MapResults of squared: 1 element>"


def test_a_worker_fetch_stops_at_its_byte_limit_but_returns_one_element_at_least():
    held = SimpleNamespace(value=[b"x" * 1000] * 10)
    assert len(elements.take_held(held, range(10), limit=2500)) == 3
    assert len(elements.take_held(held, range(4, 10), limit=1)) == 1
    assert elements.take_held(held, range(0, 10, 4)) == [b"x" * 1000] * 3
    assert elements.count_held(held) == 10
    long, short = elements.preview_held(SimpleNamespace(value=["a" * 1000, 2, 3]), 2)
    assert long.startswith("'aaa") and "..." in long and len(long) <= 60 and short == "2"


def test_cached_elements_are_read_by_key_and_a_missing_one_is_named(tmp_path):
    folder = str(tmp_path)
    keys = [cache.store(folder, f"key{i}", {}, {}, i * i) for i in range(4)]
    assert elements.take_cached(folder, keys[1:3]) == [1, 4]
    assert elements.preview_cached(folder, keys[:2]) == ["0", "1"]
    with pytest.raises(PipelineError, match="not in the cache"):
        elements.take_cached(folder, ["0" * 32])


@task
def numbers(n=5):
    return list(range(n))


@task(map="numbers")
def squared(numbers):
    return numbers * numbers


@task
def collect(squared):
    return squared


def test_a_local_run_gives_a_map_s_results_as_a_lazy_sequence_and_a_collect_the_list(tmp_path):
    session = SimpleNamespace(record={"results": str(tmp_path / "results")})
    run = start(session, Pipeline("lazy", [numbers, squared, collect]), on="local").wait()
    mapped = run.result("squared")
    assert isinstance(mapped, MapResults) and len(mapped) == 5 and mapped.fetched == 0
    assert mapped[-1] == 16 and mapped[1:3] == [1, 4] and list(mapped) == [0, 1, 4, 9, 16]
    assert run.result("collect") == [0, 1, 4, 9, 16] and type(run.result("collect")) is list
    assert run.result("numbers") == [0, 1, 2, 3, 4]


class _Client:
    """Runs what is submitted at once, here, counting the submissions."""

    def __init__(self):
        self.submitted: list[str] = []

    def submit(self, func, *args, pure=True):
        self.submitted.append(func.__name__)
        value = func(*args)
        return SimpleNamespace(result=lambda: value)


def recorded(tmp_path, tasks: list[str], events: list[tuple[str, str, str | None]]):
    """A SQLite record store holding run ``r1`` of *tasks* and the ``(task, state, result key)`` events."""
    from toppipe.records import RecordStore, init

    url = f"sqlite:///{tmp_path}/records.sqlite"
    init(url)
    store = RecordStore(url)
    store.write([("toppipe-run", {"run": "r1", "state": "started", "pipeline": "lazy", "tasks": tasks, "time": 1.0,
                                         "dask_keys": {t: f"{t}-r1-{i}" for i, t in enumerate(tasks)}})]
                + [("toppipe-task", {"run": "r1", "task": name, "state": state, "time": 2.0, "result_key": key})
                   for name, state, key in events])  # fmt: skip
    store.close()
    return lambda: RecordStore(url)


def test_an_attached_run_reads_a_map_s_elements_from_the_cache_in_order_without_the_failed_ones(tmp_path):
    folder = str(tmp_path)
    keys = {i: cache.store(folder, f"element{i}", {}, {}, f"value {i}") for i in range(12)}
    events = [("squared", "done", "collected")]
    for i in reversed(range(12)):  # recorded in any order; element 4 failed
        events.append((f"squared[{i}]", "failed" if i == 4 else ("cached" if i % 2 else "done"), keys[i]))
    client = _Client()
    session = SimpleNamespace(record={"results": folder}, client=client, records=recorded(tmp_path, ["squared"], events),
                              guard_scheduler=lambda *args: contextlib.nullcontext())  # fmt: skip
    run = attach(session, "r1")
    found = run._cached_elements("squared")
    assert len(found) == 11 and client.submitted == []
    assert found[4] == "value 5" and client.submitted == ["take_cached"] and found[-1] == "value 11"
    assert list(found) == [f"value {i}" for i in range(12) if i != 4]


def test_a_reattached_run_s_tasks_are_the_pipeline_s_not_the_elements_of_its_maps(tmp_path):
    names = ("items", "squared[1]", "squared", "squared[0]", "collect")
    records = recorded(tmp_path, ["items", "squared", "collect"], [(n, "done", None) for n in names])
    run = attach(SimpleNamespace(records=records), "r1")
    assert run.tasks == ["items", "squared", "collect"] and set(run.attached) == set(run.tasks)
