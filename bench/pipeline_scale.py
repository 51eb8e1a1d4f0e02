"""Side by side, on one running site: a map over N elements through a toppipe run against
``client.map`` of the same function, same workers, same client; then the fully cached re-run.

    python -m deploy up inventories/local && .venv/bin/python bench/pipeline_scale.py [--site local] [--elements 10000]

Targets (issue 16): submitting the run under 10 s, at most 2 ms per element over
``client.map``, a fully cached re-run of 10,000 elements in at most 5 s, the run's status
within 1 s and a reattach from another process under 2 s; progress showing an element at most
1 s after it finished, and the dashboard's run page (its content and a page of a map's elements,
built by the page's own callback bodies and serialised as Dash sends them) under 1 s, beside the
bare queries they need.
"""

from __future__ import annotations

import argparse
import sys
import time


def squared(i: int) -> int:
    return i * i


#: Run in a new process: connect, reattach to a run by id and read its status, timed from after imports.
REATTACH = """
import sys, time
import toppipe
started = time.perf_counter()
session = toppipe.connect(sys.argv[1])
session.run(sys.argv[2]).status()
print(time.perf_counter() - started)
"""


def reattach(site: str, run_id: str) -> float:
    """Seconds another process takes to reattach to *run_id* and read its status."""
    import subprocess

    done = subprocess.run([sys.executable, "-c", REATTACH, site, run_id], capture_output=True, text=True, check=True)
    return float(done.stdout.split()[-1])


def progress_latency(run, task: str, interval: float = 0.5) -> tuple[list[float], list[float]]:
    """Watch *run* as ``run.progress()`` does (a summary every *interval* s) until it settles; per
    element of *task*, the seconds from its recorded end (worker clock: same host on the local site)
    to the first look that counted it; and the seconds each look took."""
    looks, took = [], []
    while True:
        started = time.perf_counter()
        found = run.summary()
        took.append(time.perf_counter() - started)
        looks.append((time.time(), found[task].counts.get("done", 0)))
        if all(state in ("done", "cached", "failed", "cancelled", "interrupted") for state in found.states.values()) \
                and found[task].counts.get("done", 0) == found[task].elements:  # fmt: skip
            break
        time.sleep(interval)
    ended = sorted(e["ended"] for e in run.elements(task, state="done", limit=None))
    latencies, look = [], 0
    for rank, finished in enumerate(ended, start=1):
        while looks[look][1] < rank:
            look += 1
        latencies.append(looks[look][0] - finished)
    return latencies, took


def run_page(session, run_id: str, task: str) -> list[tuple[str, float, float]]:
    """``(label, seconds, bare seconds)``: the run page's callbacks against the queries they need."""
    import plotly.io.json

    from toppipe.dashboard.app import make_app
    from toppipe.dashboard.site import RealSite
    from toppipe.pipeline import summary

    source = RealSite(session.site)
    app = make_app(source, "bench-token")
    board = app.toppipe
    board.poller.stop()

    def timed(call, sent: bool = True) -> float:
        """Seconds *call* takes (the second time), with the JSON Dash sends of what it returns if *sent*."""
        call()  # warm
        started = time.perf_counter()
        found = call()
        if sent:
            plotly.io.json.to_json_plotly(found)
        return time.perf_counter() - started

    def bare_summary():
        store = session.records()
        try:
            return summary.read(store, run_id), store.run(run_id)
        finally:
            store.close()

    def bare_page():
        store = session.records()
        try:
            return store.elements(run_id, task, limit=50, offset=5000)
        finally:
            store.close()

    return [
        ("run page (summary, graph, failures)", timed(lambda: board.run_page(run_id)), timed(bare_summary, False)),
        ("run page: elements 5001-5050", timed(lambda: board.elements(run_id, task, None, 100)[1]), timed(bare_page, False)),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", default="local")
    parser.add_argument("--elements", type=int, default=10_000)
    parser.add_argument("--on", default="hosts")
    args = parser.parse_args()

    import toppipe
    from toppipe.pipeline import Pipeline, task

    @task
    def items(n=args.elements):
        return list(range(n))

    @task(map="items")
    def element(items):
        return squared(items)

    @task
    def collected(element):
        return len(element)

    session = toppipe.connect(args.site)
    session.wait_for_workers(1)
    client = session.client
    pipeline = Pipeline("scale", [items, element, collected])
    pipeline.session = session

    started = time.perf_counter()
    client.gather(client.map(squared, range(args.elements), pure=False))
    bare = time.perf_counter() - started

    started = time.perf_counter()
    run = pipeline.run(on=args.on, force=True)
    submitted = time.perf_counter() - started
    assert run.wait().result("collected") == args.elements
    computed = time.perf_counter() - started

    started = time.perf_counter()
    status = run.status()
    status_seconds = time.perf_counter() - started
    assert len(status) >= 3
    started = time.perf_counter()
    assert len(run.result("element")) == args.elements  # lazy: the count, no element
    length_seconds = time.perf_counter() - started
    reattach_seconds = reattach(args.site, run.id)

    started = time.perf_counter()
    assert pipeline.run(on=args.on).wait().result("collected") == args.elements
    cached = time.perf_counter() - started

    watched = pipeline.run(on=args.on, force=True)
    latencies, looks = progress_latency(watched, "element")
    latencies.sort()
    median, worst = latencies[len(latencies) // 2], latencies[-1]
    look = sorted(looks)[len(looks) // 2]
    page_rows = run_page(session, watched.id, "element")

    over = (computed - bare) / args.elements * 1000
    print(f"{'measure':<40}{'seconds':>9}  verdict")
    print(f"{f'client.map, {args.elements} elements':<40}{bare:>9.2f}")
    print(f"{'toppipe map, submitted':<40}{submitted:>9.2f}  {'ok' if submitted < 10 else 'SLOW'} (target < 10 s)")
    print(f"{'toppipe map, computed':<40}{computed:>9.2f}  {over:.2f} ms/element over client.map:"
          f" {'ok' if over <= 2 else 'SLOW'} (target <= 2)")  # fmt: skip
    print(f"{'toppipe map, fully cached re-run':<40}{cached:>9.2f}  {'ok' if cached <= 5 else 'SLOW'} (target <= 5 s)")
    print(f"{'run.status() of the finished run':<40}{status_seconds:>9.2f}  {'ok' if status_seconds <= 1 else 'SLOW'} (target <= 1 s)")
    print(f"{'len(run.result(map)), lazy':<40}{length_seconds:>9.2f}")
    print(f"{'reattach from another process':<40}{reattach_seconds:>9.2f}  {'ok' if reattach_seconds < 2 else 'SLOW'} (target < 2 s;"
          " connect, session.run(id), status)")  # fmt: skip
    print(f"{'progress: element done -> shown, median':<40}{median:>9.2f}  (a look every 0.5 s, as run.progress())")
    print(f"{'progress: element done -> shown, worst':<40}{worst:>9.2f}  {'ok' if worst <= 1 else 'SLOW'} (target <= 1 s)")
    print(f"{'progress: one look (run.summary())':<40}{look:>9.3f}  median of {len(looks)}")
    for label, seconds, bare in page_rows:
        print(f"{label:<40}{seconds:>9.3f}  {seconds / bare:.1f}x the bare queries ({bare:.3f} s):"
              f" {'ok' if seconds < 1 else 'SLOW'} (target < 1 s)")  # fmt: skip
    session.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
