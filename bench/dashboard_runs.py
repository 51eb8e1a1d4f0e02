"""The dashboard's runs page over a real record store holding 10,000 runs,
side by side with the bare query it needs: the first page, the last page,
and a filtered page, each built by the page's own handler (what its Dash
callback runs), from the database, one page at a time. Then the run page of a
run of 100 tasks (its refresh: sections and graph, with the JSON Dash sends),
side by side with the bare queries it needs, and its graph alone as dash-cytoscape
elements beside the SVG of the same pipeline (what the page drew before).

    .venv/bin/python bench/dashboard_runs.py [--runs 10000] [--tasks 100] [--url postgresql://...]

Without --url the store is a fresh SQLite file (the local site's kind); give a
site's records URL to measure its PostgreSQL. Targets: the runs page under 1 s
(issue 6), the run page of 100 tasks under 1 s (issue 18).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid


def fill(url: str, n: int) -> None:
    from toppipe.records import RecordStore, init

    init(url)
    store = RecordStore(url)
    events, now = [], time.time()
    for i in range(n):
        run = f"bench-{uuid.uuid4().hex[:12]}"
        events.append(("toppipe-run", {"run": run, "state": "started", "pipeline": f"p{i % 7}", "tasks": ["a", "b"], "time": now - i}))
        events.append(("toppipe-run", {"run": run, "state": "done" if i % 5 else "failed", "time": now - i + 1}))
    store.write(events)
    store.close()


GRAPH_RUN = "bench-graph"
STATES = ("done", "done", "done", "cached", "running", "failed", "pending")


def graph_of(n: int, width: int = 10) -> dict[str, dict]:
    """*n* tasks in layers of *width*, each waiting for two tasks of the layer before (one input
    and one ``after``), as a run's provenance keeps its graph."""
    names = [f"step{i // width}_{i % width}" for i in range(n)]
    graph = {}
    for i, name in enumerate(names):
        before = names[(i // width - 1) * width : (i // width) * width]
        graph[name] = {"inputs": [before[i % len(before)]] if before else [],
                       "after": [before[(i * 7 + 3) % len(before)]] if len(before) > 1 else []}  # fmt: skip
    return graph


def fill_run(url: str, n: int) -> None:
    """Run :data:`GRAPH_RUN` of *n* tasks in mixed states, its graph in its provenance."""
    from toppipe.records import RecordStore

    graph, now = graph_of(n), time.time()
    events = [("toppipe-run", {"run": GRAPH_RUN, "state": "started", "pipeline": "layers", "tasks": list(graph),
                               "provenance": {"graph": graph}, "time": now - 60})]  # fmt: skip
    for i, name in enumerate(graph):
        state = STATES[i % len(STATES)]
        if state != "pending":
            events.append(("toppipe-task", {"run": GRAPH_RUN, "task": name, "state": "running", "host": f"node{i % 3}", "time": now - 50 + i % 9}))
        if state in ("done", "cached", "failed"):
            failure = {"error": f"ValueError: bad {i}", "traceback": f"Traceback ...\nValueError: bad {i}"} if state == "failed" else {}
            events.append(("toppipe-task", {"run": GRAPH_RUN, "task": name, "state": state, "time": now - 40 + i % 9, **failure}))
    store = RecordStore(url)
    store.write(events)
    store.close()


def timed(call, sent: bool = True) -> float:
    """Seconds *call* takes the second time (the first warms), with the JSON Dash sends of its
    answer if *sent*."""
    import plotly.io.json

    send = plotly.io.json.to_json_plotly if sent else (lambda found: found)
    send(call())
    started = time.perf_counter()
    send(call())
    return time.perf_counter() - started


def run_page_rows(source, board, n: int) -> list[tuple[str, float]]:
    """``(label, seconds)``: the bare queries first (the baseline), then the page and its graph."""
    from toppipe.dashboard.views import graph as graph_view
    from toppipe.dashboard.views.run import shape
    from toppipe.pipeline.render import svg

    def bare():
        return source.run(GRAPH_RUN), source.plain_tasks(GRAPH_RUN), source.summary(GRAPH_RUN)

    pipeline = source.graph(GRAPH_RUN)
    rows = {t["name"]: t for t in source.plain_tasks(GRAPH_RUN)}
    states = {name: row["state"] for name, row in rows.items() if row["state"] in ("pending", "running", "done", "failed", "cached")}
    return [
        (f"bare queries (run, {n} tasks, summary)", timed(bare, sent=False)),
        (f"run page of {n} tasks (refresh, JSON)", timed(lambda: board.run_page(GRAPH_RUN))),
        ("its graph: cytoscape elements", timed(lambda: graph_view.elements(shape(pipeline), rows))),
        ("its graph: SVG (the page before)", timed(lambda: svg(pipeline, states))),
    ]


class RecordsOnly:
    """A SiteSource reading only the record store (what the runs page uses)."""

    def __new__(cls, url: str):
        from toppipe.dashboard.site import RealSite

        class _Source(RealSite):
            @property
            def record(self) -> dict:
                return {"records": url}

        return _Source("bench")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, default=100, help="tasks of the run whose page is measured")
    parser.add_argument("--url")
    args = parser.parse_args()
    url = args.url or f"sqlite:///{tempfile.mkdtemp()}/records.sqlite"
    if not args.url:
        fill(url, args.runs)
    fill_run(url, args.tasks)
    from toppipe.dashboard.app import make_app

    source = RecordsOnly(url)
    app = make_app(source, "bench-token")
    handlers = app.toppipe
    rows = []
    for label, call in (
        ("first page", lambda: handlers.runs(0, None, None)),
        ("last page", lambda: handlers.runs(source.count_runs() // 50, None, None)),
        ("pipeline p3, failed", lambda: handlers.runs(0, "p3", "failed")),
    ):
        call()  # warm
        started = time.perf_counter()
        call()
        rows.append((label, time.perf_counter() - started))
    bare_started = time.perf_counter()
    source.runs(limit=50, offset=0)
    source.count_runs()
    bare = time.perf_counter() - bare_started
    print(f"{'measure (' + str(source.count_runs()) + ' runs)':<34}{'seconds':>9}{'ratio':>8}  verdict")
    print(f"{'bare query (page + count)':<34}{bare:>9.4f}{1:>8.2f}")
    for label, seconds in rows:
        print(f"{'runs page: ' + label:<34}{seconds:>9.4f}{seconds / bare:>8.1f}  {'ok' if seconds < 1 else 'SLOW'} (target < 1 s)")
    print()
    (label, bare), *page = run_page_rows(source, handlers, args.tasks)
    print(f"{'measure (a run of ' + str(args.tasks) + ' tasks)':<40}{'seconds':>9}{'ratio':>8}  verdict")
    print(f"{label:<40}{bare:>9.4f}{1:>8.2f}")
    for label, seconds in page:
        verdict = f"  {'ok' if seconds < 1 else 'SLOW'} (target < 1 s)" if label.startswith("run page") else ""
        print(f"{label:<40}{seconds:>9.4f}{seconds / bare:>8.1f}{verdict}")
    handlers.poller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
