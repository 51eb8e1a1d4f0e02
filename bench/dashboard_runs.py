"""The dashboard's runs page over a real record store holding 10,000 runs,
side by side with the bare query it needs: the first page, the last page,
and a filtered page, each built by the page's own handler (what its Dash
callback runs), from the database, one page at a time.

    .venv/bin/python bench/dashboard_runs.py [--runs 10000] [--url postgresql://...]

Without --url the store is a fresh SQLite file (the local site's kind); give a
site's records URL to measure its PostgreSQL. Target (issue 6): under 1 s.
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
    parser.add_argument("--url")
    args = parser.parse_args()
    url = args.url or f"sqlite:///{tempfile.mkdtemp()}/records.sqlite"
    if not args.url:
        fill(url, args.runs)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
