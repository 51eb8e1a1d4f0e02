"""Side by side, in one run: the run recorder's writes to PostgreSQL, in one pipeline per batch
against one round trip per statement (what it did before).

    .venv/bin/python bench/records_write.py [--url postgresql://USER@HOST:PORT/DB] [--elements 10000]

The events are those of one map of *elements* elements (each ``running`` then ``done``, two
workers interleaved), in batches of the size the recorder writes under load (``--batch``). Each
round writes them to a fresh run in the store, once each way, alternating. Without ``--url`` a
throw-away PostgreSQL is started from the host's own binaries (``initdb`` on PATH or under
/usr/lib/postgresql), on loopback: a real site's store is a network hop away, where a round
trip costs more and the pipeline saves more.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager, nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from toppipe import records  # noqa: E402


def map_events(run: str, elements: int) -> list[tuple[str, dict]]:
    """A run of one map: its start, each element running then done (two at a time), its end."""
    now = time.time()
    events = [("toppipe-run", {"run": run, "state": "started", "pipeline": "bench", "tasks": ["square"], "time": now})]
    for first in range(0, elements, 2):
        pair = [f"square[{i}]" for i in range(first, min(first + 2, elements))]
        events += [("toppipe-task", {"run": run, "task": t, "state": "running", "host": "node1", "time": now}) for t in pair]
        events += [("toppipe-task", {"run": run, "task": t, "state": "done", "time": now}) for t in pair]
    return events + [("toppipe-run", {"run": run, "state": "done", "time": now})]


def write_all(url: str, pipelined: bool, elements: int, batch: int) -> float:
    """Seconds to write one map's events in batches of *batch*."""
    store = records.RecordStore(url)
    store.pipelined = pipelined
    events = map_events(f"bench-{uuid.uuid4().hex[:12]}", elements)
    try:
        started = time.perf_counter()
        for i in range(0, len(events), batch):
            store.write(events[i : i + batch])
        return time.perf_counter() - started
    finally:
        store.close()


@contextmanager
def throwaway_postgres():
    """The URL of a PostgreSQL started for this run (as the ``postgres`` user when run as root)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]), reverse=True)
    initdb = next(iter(found), None) or shutil.which("initdb")
    if initdb is None:
        sys.exit("bench: no PostgreSQL here (initdb); pass --url postgresql://USER@HOST:PORT/DB")
    bindir = Path(initdb).resolve().parent
    folder = tempfile.mkdtemp(prefix="toppipe-bench-pg-")
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(folder, "postgres")
    port = 54000 + os.getpid() % 1000
    data = f"{folder}/data"
    run = lambda *argv: subprocess.run([*as_user, *argv], check=True, stdout=subprocess.DEVNULL)  # noqa: E731
    run(str(bindir / "initdb"), "-D", data, "-A", "trust", "-U", "bench")
    run(str(bindir / "pg_ctl"), "-D", data, "-w", "-l", f"{folder}/log", "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start")
    try:
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "bench", "records")
        yield f"postgresql://bench@127.0.0.1:{port}/records"
    finally:
        run(str(bindir / "pg_ctl"), "-D", data, "-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a PostgreSQL record store (default: a throw-away one on loopback)")
    parser.add_argument("--elements", type=int, default=10000)
    parser.add_argument("--batch", type=int, default=500, help="events per write (the recorder's batch)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with (nullcontext(args.url) if args.url else throwaway_postgres()) as url:
        records.init(url)
        found: dict[str, list[float]] = {"one round trip per statement": [], "one pipeline per batch": []}
        for _ in range(args.repeat):  # alternating, so that both see the same noise
            found["one round trip per statement"].append(write_all(url, False, args.elements, args.batch))
            found["one pipeline per batch"].append(write_all(url, True, args.elements, args.batch))
    events = 2 * args.elements + 2
    base = statistics.median(found["one round trip per statement"])
    print(f"{'writes of one map (' + str(args.elements) + ' elements)':<36}{'seconds':>9}{'events/s':>10}{'ratio':>8}")
    for label, seconds in found.items():
        median = statistics.median(seconds)
        print(f"{label:<36}{median:>9.2f}{events / median:>10.0f}{median / base:>8.2f}")
    print(f"({events} events in batches of {args.batch}; median of {args.repeat}, alternating)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
