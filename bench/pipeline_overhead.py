"""Side by side, on one running site: N trivial tasks through a toppipe run
against the same N through a bare ``client.map``, same workers, same client.

    python -m deploy up inventories/local && .venv/bin/python bench/pipeline_overhead.py [--site local] [--tasks 10000]

The toppipe run does what a run always does: a cache key per task, a result
file per task on the results folder, two recorded events per task (the agent
writes them to the record store). Target (issue 5): at most 10 % over
``client.map``.
"""

from __future__ import annotations

import argparse
import sys
import time


def trivial(i: int) -> int:
    return i + 1


def numbered(n: int):
    """Task number *n*: a trivial function whose param defaults to *n*."""

    def task(i: int = n) -> int:
        return i + 1

    return task


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", default="local")
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--on", default="hosts")
    args = parser.parse_args()

    import toppipe
    from toppipe.pipeline import Pipeline, Task

    session = toppipe.connect(args.site)
    session.wait_for_workers(1)
    client = session.client
    pipeline = Pipeline("overhead", [Task(name=f"t{i}", func=numbered(i)) for i in range(args.tasks)])
    pipeline.session = session

    started = time.perf_counter()
    futures = client.map(trivial, range(args.tasks), pure=False)
    client.gather(futures)
    bare = time.perf_counter() - started
    del futures

    started = time.perf_counter()
    run = pipeline.run(on=args.on, force=True)
    run.wait()
    toppipe_run = time.perf_counter() - started

    ratio = toppipe_run / bare
    print(f"{'measure':<34}{'seconds':>9}{'ratio':>8}  verdict")
    print(f"{f'client.map, {args.tasks} tasks':<34}{bare:>9.2f}{1:>8.2f}")
    print(f"{f'toppipe run, {args.tasks} tasks':<34}{toppipe_run:>9.2f}{ratio:>8.2f}  {'ok' if ratio <= 1.10 else 'SLOW'} (target <= 1.10)")
    session.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
