"""A run grouped by task (:mod:`toppipe.pipeline.summary`): the pure grouping, the record
store's one GROUP BY and paged drill-down on SQLite with 10,000 elements, the progress line,
and the dashboard's run page and elements drill-down over that store."""

from __future__ import annotations

import random

import pytest
from dash import no_update

from tests.unit.test_dashboard import ids, walk
from toppipe.dashboard.app import make_app
from toppipe.dashboard.site import RealSite
from toppipe.pipeline import summary
from toppipe.pipeline.progress import show_progress, summary_line
from toppipe.pipeline.summary import RunSummary, TaskSummary, count_elements, split, summarize
from toppipe.records import RecordStore, init

N = 10_000


# -- the pure grouping ---------------------------------------------------------


def test_split_tells_an_element_from_a_task():
    assert split("clean[7]") == ("clean", 7)
    assert split("clean") == ("clean", None)
    assert split("odd[x]") == ("odd[x]", None)


def test_elements_are_counted_by_task_and_state_and_tasks_left_out():
    rows = [("clean", "running"), ("clean[0]", "done"), ("clean[1]", "failed"), ("clean[2]", "done"), ("score[0]", "cached")]
    assert count_elements(rows) == {"clean": {"done": 2, "failed": 1}, "score": {"cached": 1}}


def test_elements_not_recorded_yet_are_pending_while_the_map_runs_and_skipped_once_it_settled():
    running = summarize(["numbers", "clean"], {"numbers": "done", "clean": "running"}, {"clean": 10},
                        {"clean": {"done": 6, "failed": 1}})  # fmt: skip
    assert running[0] == TaskSummary("numbers", "done", None, {"done": 1})
    assert running[1].counts == {"done": 6, "failed": 1, "pending": 3} and running[1].elements == 10
    assert running[1].settled == 7 and running[1].recorded() == 7 and running[1].recorded("pending") == 0
    settled = summarize(["clean"], {"clean": "done"}, {"clean": 10}, {"clean": {"done": 6, "failed": 1}})[0]
    assert settled.counts == {"done": 6, "failed": 1, "skipped": 3} and settled.settled == 10


def test_a_map_not_started_is_one_pending_task_and_one_with_records_but_no_total_counts_them():
    found = summarize(["clean", "score"], {}, {}, {"score": {"done": 2}})
    assert found[0] == TaskSummary("clean", "pending", None, {"pending": 1})
    assert found[1].counts == {"done": 2} and found[1].elements == 2


def test_a_run_summary_reads_as_a_table_and_by_task():
    rows = summarize(["numbers", "clean"], {"numbers": "done", "clean": "running"}, {"clean": 3}, {"clean": {"done": 2}})
    found = RunSummary("r1", "demo", rows)
    assert found["clean"].counts == {"done": 2, "pending": 1} and found.states == {"numbers": "done", "clean": "running"}
    assert found.counts() == {"done": 3, "pending": 1}
    assert str(found).splitlines() == ["run r1 of demo", "  numbers  done", "  clean    running  2/3 (done 2, pending 1)"]
    assert "<table>" in found._repr_html_() and "clean" in found._repr_html_()
    with pytest.raises(KeyError, match="no task 'nope'"):
        found["nope"]
    assert summary_line(found).endswith("| clean 2/3 (done 2, pending 1)")


def test_progress_shows_the_counts_until_the_run_settles(capsys):
    class Run:  # its summary: one element settles per look
        id, pipeline, looks = "r1", "demo", 0

        def summary(self):
            self.looks += 1
            done = min(self.looks, 3)
            state = "done" if done == 3 else "running"
            return RunSummary("r1", "demo", summarize(["clean"], {"clean": state}, {"clean": 3}, {"clean": {"done": done}}))

    run = Run()
    assert show_progress(run, interval=0.01, timeout=30) == {"clean": "done"} and run.looks == 3
    shown = capsys.readouterr().err
    assert "clean 1/3 (done 1, pending 2)" in shown and shown.endswith("clean 3/3 (done 3)\n")


# -- the record store --------------------------------------------------------


def fill(url: str, n: int = N, seed: int = 1) -> dict[str, str]:
    """Run ``big`` of ``numbers`` -> map ``clean`` (n elements, in random states, recorded in any
    order) -> ``total``; the elements' states by name."""
    init(url)
    store = RecordStore(url)
    states = random.Random(seed).choices(["done", "cached", "running", "failed"], weights=[70, 20, 8, 2], k=n)
    events = [("toppipe-run", {"run": "big", "state": "started", "pipeline": "demo", "tasks": ["numbers", "clean", "total"],
                               "dask_keys": {"numbers": "numbers-big-0", "clean": "clean-big-1", "total": "total-big-2"},
                               "provenance": {"graph": {"numbers": {"inputs": [], "after": []},
                                                        "clean": {"inputs": ["numbers"], "after": [], "map": "numbers"},
                                                        "total": {"inputs": ["clean"], "after": []}}},
                               "time": 1.0}),
              ("toppipe-task", {"run": "big", "task": "numbers", "state": "done", "time": 2.0}),
              ("toppipe-task", {"run": "big", "task": "clean", "state": "running", "elements": n + 5, "time": 2.0})]  # fmt: skip
    order = list(range(n))
    random.Random(seed).shuffle(order)
    for i in order:
        name = f"clean[{i}]"
        events.append(("toppipe-task", {"run": "big", "task": name, "state": "running", "host": "node1", "time": 3.0}))
        if states[i] != "running":
            failure = {"error": f"ValueError: bad row {i}", "traceback": f"Traceback ...\nValueError: bad row {i}",
                       "inputs": f"clean={i}"} if states[i] == "failed" else {}  # fmt: skip
            events.append(("toppipe-task", {"run": "big", "task": name, "state": states[i], "time": 4.0, **failure}))
    store.write(events)
    store.close()
    return {f"clean[{i}]": state for i, state in enumerate(states)}


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('records')}/records.sqlite"
    return url, fill(url)


def test_the_store_counts_elements_with_one_group_by_as_the_pure_grouping_does(big):
    url, states = big
    store = RecordStore(url)
    statements = []
    store.db.set_trace_callback(statements.append)
    try:
        counts = store.element_counts("big")
    finally:
        store.close()
    assert counts == count_elements(states.items())
    assert len(statements) == 1 and "GROUP BY" in statements[0]


def test_the_summary_of_the_store_has_one_row_per_task(big):
    url, states = big
    store = RecordStore(url)
    try:
        rows = {row.task: row for row in summary.read(store, "big")}
    finally:
        store.close()
    assert list(rows) == ["numbers", "clean", "total"]  # in the run's order
    expected = count_elements(states.items())["clean"]
    assert rows["clean"].counts == {**expected, "pending": 5} and rows["clean"].elements == N + 5
    assert rows["numbers"].counts == {"done": 1} and rows["total"].state == "pending"


def test_the_drill_down_pages_through_a_task_s_elements_in_index_order(big):
    url, states = big
    store = RecordStore(url)
    try:
        first = store.elements("big", "clean", limit=50)
        second = store.elements("big", "clean", limit=50, offset=50)
        failed = store.elements("big", "clean", state="failed", limit=None)
        plain = store.tasks("big", elements=False)
    finally:
        store.close()
    assert [r["index"] for r in first + second] == list(range(100))
    expected = sorted(int(n[6:-1]) for n, s in states.items() if s == "failed")
    assert [r["index"] for r in failed] == expected and expected
    assert failed[0]["inputs"] == f"clean={expected[0]}" and "ValueError" in failed[0]["traceback"]
    assert {r["name"] for r in plain} == {"numbers", "clean", "total"}


def test_a_task_whose_name_begins_another_s_is_not_mixed_with_it(tmp_path):
    url = f"sqlite:///{tmp_path}/records.sqlite"
    init(url)
    store = RecordStore(url)
    store.write([("toppipe-run", {"run": "r", "state": "started", "pipeline": "p", "tasks": ["a", "a_b"], "time": 1.0})]
                + [("toppipe-task", {"run": "r", "task": n, "state": "done", "time": 2.0}) for n in ("a[0]", "a_b[0]", "a_b[1]")])  # fmt: skip
    try:
        assert [r["name"] for r in store.elements("r", "a")] == ["a[0]"]
        assert store.element_counts("r") == {"a": {"done": 1}, "a_b": {"done": 2}}
    finally:
        store.close()


# -- the dashboard over the store ----------------------------------------------


class RecordsOnly(RealSite):
    """The real site's reads of the record store, at *url*, without a site."""

    def __init__(self, url: str):
        super().__init__("test")
        self.url = url

    @property
    def record(self) -> dict:
        return {"records": self.url}


@pytest.fixture
def board(big):
    app = make_app(RecordsOnly(big[0]), "t0ken")
    yield app.toppipe
    app.toppipe.poller.stop()


def test_the_run_page_shows_tasks_with_counts_by_state_and_the_graph_of_its_tasks(board, big):
    _, states = big
    content, graph, settled, period, _ = board.run("big")
    found = ids(content)
    assert {"task-numbers", "task-clean", "task-total"} <= found
    assert not any(i.startswith("task-clean[") for i in found)  # the elements are not rows of the tasks table
    nodes = {e["data"]["id"] for e in graph.elements if "source" not in e["data"]}
    assert nodes == {"numbers", "clean", "total"}  # drawn: three tasks, not 10,000 boxes
    drills = {node.href: node.children for node in walk(content) if "drill " in (getattr(node, "className", None) or "")}
    expected = count_elements(states.items())["clean"]
    assert drills == {f"/runs/big?task=clean&state={state}": f"{state} {n}" for state, n in {**expected, "pending": 5}.items()}
    n_failed = expected["failed"]
    assert f"Failures ({n_failed})" in str(content) and len([i for i in found if i.startswith("failure-clean[")]) == min(n_failed, 50)
    shown = [i[len("failure-") :] for i in found if i.startswith("failure-")]
    assert all(f"inputs-{name}" in found and f"traceback-{name}" in found for name in shown)
    assert all(f"clean={split(name)[1]}" in str(content) for name in shown)
    assert not settled and period == 2000


def test_the_elements_drill_down_pages_by_task_and_state(board, big):
    _, states = big
    options, table, info, prev_off, next_off = board.elements("big", None, None, 0)
    assert options == ["clean"] and info == f"clean: elements 1-50 of {N}" and (prev_off, next_off) == (True, False)
    assert {i for i in ids(table) if i.startswith("element-")} == {f"element-clean[{i}]" for i in range(50)}
    index = board.element_page_index(0, "run-elements-next")
    _, _, info, prev_off, _ = board.elements("big", "clean", None, index)
    assert info == f"clean: elements 51-100 of {N}" and index == 1 and not prev_off
    assert board.element_page_index(1, "run-elements-prev") == 0 and board.element_page_index(0, "run-elements-prev") == 0
    failed = sorted(int(n[6:-1]) for n, s in states.items() if s == "failed")
    index = board.element_page_index(7, "run-elements-state")  # a new state: its first page
    _, table, info, _, next_off = board.elements("big", "clean", "failed", index)
    assert info == f"clean: failed elements 1-{min(len(failed), 50)} of {len(failed)}" and index == 0
    assert f"element-clean[{failed[0]}]" in ids(table) and "ValueError: bad row" in str(table)
    _, _, info, _, next_off = board.elements("big", "clean", None, 10_000)  # shown as the last page
    assert info == f"clean: elements {N - 49}-{N} of {N}" and next_off


def test_the_tasks_are_above_the_drill_down_and_the_details_below(board):
    above, below, elements, *_, settled, _, _ = board.run_page("big")
    assert {"run-header", "run-progress", "task-clean"} <= ids(above) and "run-graph" not in ids(above)
    assert {"run-timeline", "run-failures", "run-provenance"} <= ids(below) and not settled
    assert len(elements) == 5  # the graph (3 tasks, 2 edges) fills run-graph, which stays on the page
    missing, nothing = board.run_page("nope")[:2]
    assert "run-missing" in ids(missing) and nothing == []
    assert board.run_page(None)[:2] == (no_update, no_update)


def test_a_count_s_link_opens_those_elements(board):
    assert board.drill("?task=clean&state=failed") == ("clean", "failed")
    assert board.drill("?task=clean&state=bogus") == ("clean", None)
    assert board.drill("") == (no_update, no_update) and board.drill(None) == (no_update, no_update)


def test_a_source_with_only_task_rows_gets_the_same_grouping_and_pages():
    """SiteSource's defaults group the rows of ``tasks()`` (what a source without queries of its own gives)."""
    from tests.unit.dashboard_fakes import FakeSource, make_tasks

    source = FakeSource()
    rows = make_tasks("r00003") + [{"name": f"clean[{i}]", "state": "failed" if i % 3 == 0 else "done", "host": "node1",
                                    "started": 1.0, "ended": 2.0, "inputs": f"chunks={i}", "traceback": "Traceback"}
                                   for i in reversed(range(120))]  # fmt: skip
    source.task_rows["r00003"] = rows
    board = make_app(source, "t0ken").toppipe
    board.poller.stop()
    grouped = {row.task: row for row in source.summary("r00003")}
    assert grouped["clean"].counts == {"failed": 40, "done": 80} and grouped["chunks"].elements is None
    assert [t["name"] for t in source.plain_tasks("r00003")] == ["chunks", "clean", "aggregate", "report"]
    _, table, info, _, next_off = board.elements("r00003", "clean", "failed", 0)
    assert info == "clean: failed elements 1-40 of 40" and next_off and "element-clean[0]" in ids(table)
    assert [e["index"] for e in source.elements("r00003", "clean", limit=3, offset=1)] == [1, 2, 3]
    assert len(source.failures("r00003", 5)) == 5
