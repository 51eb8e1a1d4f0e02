"""Side by side, in one run: N trivial tasks through toppipe runs against a bare
``client.map`` on the same site, and that ``client.map`` against a plain
``distributed.LocalCluster`` with the same TLS and the same workers.

    flock /tmp/toppipe-local.lock .venv/bin/python bench/pipeline_overhead.py [--tasks 10000] [--repeat 3]
    .venv/bin/python bench/pipeline_overhead.py --site local   # an already running site

Without ``--site`` it brings the local site up in a throw-away state folder
and takes it down at the end. Every measure runs ``--repeat`` times,
interleaved (the machine's noise falls on all of them alike), after a small
warm-up of each; the table shows medians, and ratios as the median of each
round's ratio. A toppipe run does what a run always
does: a cache key per task, a result file per task in the results folder,
recorded events (the agent writes them to the record store; the next measure
starts once they are written). The floor (``bench/local_dask_floor.py``) is a
``LocalCluster`` with processes, a temporary CA, ``require_encryption=True``,
and the site's count of workers, threads and memory; beside it, the same
cluster started by dask's own CLI (scheduler and nannies in processes of their
own, as the site runs them).

Targets (issue 19): toppipe at most 1.05x ``client.map``; ``client.map`` on the
site within 10 % of the floor.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

REPO = Path(__file__).resolve().parent.parent


def trivial(i: int) -> int:
    return i + 1


def numbered(n: int):
    """Task number *n*: a trivial function whose param defaults to *n*."""

    def task(i: int = n) -> int:
        return i + 1

    return task


def mapped_pipeline(n: int):
    """``items`` (range(n)) and ``element``, a map over it: n elements, each its own dask task."""
    from toppipe.pipeline import Pipeline, task

    @task
    def items(n=n):
        return list(range(n))

    @task(map="items")
    def element(items):
        return items + 1

    return Pipeline("overhead-map", [items, element])


def plain_pipeline(n: int):
    """n independent plain tasks, each a function of its own."""
    from toppipe.pipeline import Pipeline, Task

    return Pipeline("overhead-plain", [Task(name=f"t{i}", func=numbered(i)) for i in range(n)])


class Processes:
    """CPU seconds (user and system) of a cluster's scheduler, workers and nannies, and of this
    process (the client; a LocalCluster's scheduler too): less noisy than wall time on a busy machine."""

    def __init__(self, client):
        import psutil

        pids = {os.getpid(), client.run_on_scheduler(os.getpid), *client.run(os.getpid).values()}
        found = [psutil.Process(pid) for pid in pids]
        self.processes = found + [p.parent() for p in found if p.pid != os.getpid() and p.parent() is not None]

    def cpu(self) -> float:
        return sum(sum(p.cpu_times()[:2]) for p in {p.pid: p for p in self.processes}.values())


def timed(work, processes: Processes) -> tuple[float, float]:
    """(wall seconds, CPU seconds of *processes*) of *work()*."""
    cpu, started = processes.cpu(), time.perf_counter()
    work()
    return time.perf_counter() - started, processes.cpu() - cpu


def bare_map(client, n: int, processes: Processes) -> tuple[float, float]:
    return timed(lambda: client.gather(client.map(trivial, range(n), pure=False)), processes)


def toppipe_run(session, pipeline, on: str, processes: Processes) -> tuple[float, float]:
    """From ``run()`` to ``wait()``; then (untimed) until the agent recorded every task."""
    found = []
    measured = timed(lambda: found.append(pipeline.run(on=on, force=True, session=session).wait()), processes)
    recorded(found[0])
    return measured


def recorded(run, timeout: float = 120) -> None:
    """Wait until the record store has every task of *run* settled (the agent writes in batches)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = run.summary()
        if all(state in ("done", "cached") for state in found.states.values()):
            return
        time.sleep(0.2)
    raise TimeoutError(f"run {run.id} was not recorded within {timeout} s")


@contextmanager
def throwaway_site(inventory: str):
    """The site of *inventory* (the local one), up in a temporary state folder, down and purged at the end."""
    with tempfile.TemporaryDirectory() as state:
        os.environ["TOPPIPE_STATE_DIR"] = state
        deploy = [sys.executable, "-m", "deploy"]
        try:
            print(f"up {inventory} ...", file=sys.stderr, flush=True)
            subprocess.run([*deploy, "up", inventory], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
            yield "local"
        finally:
            subprocess.run([*deploy, "down", inventory, "--purge"], cwd=REPO, stdout=subprocess.DEVNULL)


def per_round(measured: list[tuple[float, float]], base: list[tuple[float, float]]) -> tuple[float, float]:
    """(wall, CPU) ratios of *measured* to *base*: the median of the rounds' own ratios."""
    return tuple(statistics.median(m[i] / b[i] for m, b in zip(measured, base)) for i in (0, 1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", default=None, help="a running site (default: the local site, brought up for the run)")
    parser.add_argument("--inventory", default="inventories/local",
                        help="the local site's inventory (a copy with other ports runs beside a site already up)")
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--on", default="hosts")
    parser.add_argument("--no-plain", action="store_true", help="leave out the run of N plain tasks")
    args = parser.parse_args()

    with ExitStack() as stack:
        site = args.site or stack.enter_context(throwaway_site(args.inventory))
        import toppipe
        from local_dask_floor import cli_client, floor_client, site_workers

        session = toppipe.connect(site)
        stack.callback(session.close)
        if not args.site:  # all of the inventory's workers: one still joining gave the floor one worker fewer
            from deploy.inventory.loader import load_site

            session.wait_for_workers(sum(host.workers for host in load_site(REPO / args.inventory).group("workers")))
        workers, threads, memory = site_workers(session)
        session.wait_for_workers(workers)
        floor = stack.enter_context(floor_client(workers, threads, memory))
        cli = stack.enter_context(cli_client(workers, threads, memory))
        n = args.tasks
        on_site, on_floor, on_cli = Processes(session.client), Processes(floor), Processes(cli)
        measures = {
            "floor": ("LocalCluster, same TLS: client.map", lambda k: bare_map(floor, k, on_floor)),
            "cli": ("dask CLI cluster, same TLS: client.map", lambda k: bare_map(cli, k, on_cli)),
            "bare": ("site: client.map", lambda k: bare_map(session.client, k, on_site)),
            "map": ("site: toppipe map", lambda k: toppipe_run(session, mapped_pipeline(k), args.on, on_site)),
        }
        if not args.no_plain:
            measures["plain"] = ("site: toppipe plain tasks", lambda k: toppipe_run(session, plain_pipeline(k), args.on, on_site))
        for _, measure in measures.values():  # warm-up: imports on the workers, first connections
            measure(100)
        found: dict[str, list[tuple[float, float]]] = {name: [] for name in measures}
        for round_ in range(args.repeat):
            for name, (_, measure) in measures.items():
                found[name].append(measure(n))
            print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1][0]:.2f} s ({v[-1][1]:.2f} CPU s)" for k, v in found.items()),
                  file=sys.stderr)  # fmt: skip
    wall = {name: statistics.median(v[0] for v in values) for name, values in found.items()}
    cpu = {name: statistics.median(v[1] for v in values) for name, values in found.items()}
    against = {"cli": ("floor", None), "bare": ("floor", 1.10), "map": ("bare", 1.05), "plain": ("bare", 1.05)}
    print(f"{workers} workers x {threads} thread(s), {n} tasks, median of {args.repeat} (interleaved); CPU: client,"
          " scheduler, workers and nannies")  # fmt: skip
    print(f"{'measure':<40}{'seconds':>9}{'tasks/s':>9}{'ratio':>7}{'CPU s':>8}{'ratio':>7}  {'against':<8}verdict (wall)")
    for name, (label, _) in measures.items():
        base, target = against.get(name, (None, None))
        ratio, cpu_ratio = (per_round(found[name], found[base]) if base else (1.0, 1.0))
        verdict = "" if target is None else f"{'ok' if ratio <= target else 'SLOW'} (target <= {target:.2f})"
        print(f"{label:<40}{wall[name]:>9.2f}{n / wall[name]:>9.0f}{ratio:>7.2f}{cpu[name]:>8.2f}{cpu_ratio:>7.2f}"
              f"  {base or '-':<8}{verdict}")  # fmt: skip
    print("site: client.map against the dask CLI cluster (the same layout): {:.2f} wall, {:.2f} CPU".format(
        *per_round(found["bare"], found["cli"])))  # fmt: skip
    print("(ratios: the median of each round's ratio, the measures of a round being minutes apart at most)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
