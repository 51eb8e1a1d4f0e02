"""The dashboard's runs page over a real record store holding 10,000 runs,
side by side with the bare query it needs: the first page, the last page,
and a filtered page, each built by the page's own handler (what its Dash
callback runs), from the database, one page at a time. Then the run page of a
run of 100 tasks (its refresh: sections and graph, with the JSON Dash sends),
side by side with the bare queries it needs, and its graph alone as dash-cytoscape
elements beside the SVG of the same pipeline (what the page drew before).

    .venv/bin/python bench/dashboard_runs.py [--runs 10000] [--tasks 100] [--workers 100] [--browser] [--url postgresql://...]

Without --url the store is a fresh SQLite file (the local site's kind); give a
site's records URL to measure its PostgreSQL. Targets: the runs page under 1 s
(issue 6), the run page of 100 tasks and the site page of 100 workers under 1 s
each (issue 18); --browser also opens the run page in Chromium.
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


def site_page_rows(n: int) -> list[tuple[str, float]]:
    """``(label, seconds)``: the site page of *n* workers (10 hosts, half of them in Slurm jobs)
    built from the poller's cached view, against the JSON of that view alone (the baseline)."""
    import plotly.io.json

    from toppipe.dashboard.views import site as site_view

    hosts = [f"node{h}" for h in range(10)]
    workers = [{"name": f"w{i}", "host": hosts[i % 10], "slurm_job": str(1000 + i // 2) if i % 2 else None,
                "memory": 4 << 30, "cpu": 37.0, "threads": 2} for i in range(n)]  # fmt: skip
    view = {
        "hosts": [{"name": h, "address": f"10.0.0.{i}", "reachable": True} for i, h in enumerate(hosts)],
        "services": [{"host": h, "name": name, "healthy": True, "detail": "answering", "uptime_s": 3600.0, "where": "pid 1"}
                     for h in hosts for name in ("workers", "lsyncd")],
        "workers": workers,
        "slurm_queue": [{"job_id": str(1000 + j), "state": "RUNNING", "node": hosts[j % 10], "elapsed": "0:10:00", "pool": "slurm"}
                        for j in range(n // 2)],
        "pools": [{"name": "hosts", "kind": "hosts", "workers": n // 2, "limits": {"per_host": {h: 5 for h in hosts}}},
                  {"name": "slurm", "kind": "slurm", "workers": n // 2, "pending_jobs": 0, "adaptive": [0, 100],
                   "limits": {"partition": "batch", "max_jobs": 100, "walltime": "01:00:00"}}],
        "links": {"dask": "http://127.0.0.1:8787/status", "jupyter": "http://127.0.0.1:8888/lab"},
    }  # fmt: skip
    return [
        (f"JSON of the cached view ({n} workers)", timed(lambda: plotly.io.json.to_json_plotly(view), sent=False)),
        (f"site page of {n} workers (JSON)", timed(lambda: site_view.content(view))),
    ]


def browser_rows(app, n: int) -> list[tuple[str, float]]:
    """``(label, seconds)``: the run page in Chromium until its tasks table and its graph of *n*
    nodes are drawn: reached from the runs page by a link (as a user moves between pages), and
    loaded anew (its scripts cached, as on a second visit)."""
    import threading

    from playwright.sync_api import sync_playwright

    from toppipe.dashboard.server import make_server

    server = make_server(app.server, "127.0.0.1", 0)
    threading.Thread(target=server.run, daemon=True).start()
    url = f"http://127.0.0.1:{server.effective_port}"
    drawn = (f"document.querySelector('#run-tasks') && document.querySelector('#run-graph')._cyreg"
             f" && document.querySelector('#run-graph')._cyreg.cy.nodes().length === {n}")  # fmt: skip
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{url}/?token=bench-token")
            reload, follow = [], []
            for _ in range(2):
                started = time.perf_counter()
                page.goto(f"{url}/runs/{GRAPH_RUN}")
                page.wait_for_function(drawn, timeout=60_000)
                reload.append(time.perf_counter() - started)
                page.goto(f"{url}/runs")
                page.wait_for_selector("#runs-table", timeout=60_000)
                started = time.perf_counter()
                page.evaluate(FOLLOW_LINK, f"/runs/{GRAPH_RUN}")
                page.wait_for_function(drawn, timeout=60_000)
                follow.append(time.perf_counter() - started)
            browser.close()
    finally:
        server.trigger.pull_trigger(server.close)
    return [(f"run page of {n} tasks in Chromium, from a link", follow[-1]),
            (f"run page of {n} tasks in Chromium, reloaded", reload[-1])]  # fmt: skip


#: What a click on a dcc.Link does: the dashboard's pages change without loading the app again.
FOLLOW_LINK = "path => { window.history.pushState({}, '', path); window.dispatchEvent(new CustomEvent('_dashprivate_pushstate')); }"


def show(title: str, rows: list[tuple[str, float]], targets: tuple[str, ...]) -> None:
    """*rows* with their ratio to the first (the baseline); those whose label starts with one of
    *targets* get a verdict against 1 s."""
    (label, bare), *measured = rows
    print(f"\n{title:<44}{'seconds':>9}{'ratio':>8}  verdict")
    print(f"{label:<44}{bare:>9.4f}{1:>8.2f}")
    for label, seconds in measured:
        verdict = f"  {'ok' if seconds < 1 else 'SLOW'} (target < 1 s)" if label.startswith(targets) else ""
        print(f"{label:<44}{seconds:>9.4f}{seconds / bare:>8.1f}{verdict}")


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
    parser.add_argument("--workers", type=int, default=100, help="workers on the site page measured")
    parser.add_argument("--browser", action="store_true", help="also time the run page in Chromium (Playwright)")
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
    page = run_page_rows(source, handlers, args.tasks)
    if args.browser:
        page += browser_rows(app, args.tasks)
    show(f"measure (a run of {args.tasks} tasks)", page, ("run page",))
    show(f"measure (a site of {args.workers} workers)", site_page_rows(args.workers), ("site page",))
    handlers.poller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
