"""Side by side, alternating, in one run on the lab: the time from ``scale(n)`` on an empty Slurm
pool to n workers joined, with toppipe (``session.scale(n, pool="slurm")``: the site agent submits
the jobs) against a bare dask-jobqueue ``SLURMCluster.scale(n)`` on the same login node and
partition, in the same scheduler image, with the same binds and worker Python as the agent's jobs
(the plain cluster of ``bench/pool_adapt.py``).

    scripts/lab up && .venv/bin/python bench/slurm_scale.py [--workers 4] [--rounds 5]

Uses a throw-away state folder, runs ``up --no-check``, and takes the site down with ``--purge``
at the end. Each round starts with no Slurm job of the lab user and ends when the pool (or the
plain cluster) is back at zero. Both sides poll for joined workers every 50 ms: the plain cluster
in its own scheduler's process, toppipe through the session (one call to the site's scheduler).
Target (issue 19): toppipe's median at most 1.10 times the bare cluster's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from pool_adapt import INVENTORY, POOL, RAW_PREAMBLE, REPO, RawCluster, pool_empty, side_by_side, wait

from tests.lab.conftest import load_lab

#: Run on login inside the scheduler image: a bare SLURMCluster scaled to n jobs and back to
#: zero, one round per line read on stdin ("go"); one JSON line per round.
#: A SpecCluster names new workers from where it left off, so a round after ``scale(0)`` reuses
#: the names of the round before; the callback dask schedules lost-worker-timeout (15 s) after a
#: worker leaves then closes the new job of the same name if it has not joined yet: "3 of 4
#: joined", its job cancelled by its own cluster 2 s after it started. The callback is set to run
#: at once here (the old workers are gone by then). The agent names every job anew (agent_pools).
RAW_SCALE_SCRIPT = RAW_PREAMBLE + r'''
import dask
dask.config.set({"distributed.deploy.lost-worker-timeout": "0.1s"})

async def main(cfg):
    async with plain_cluster(cfg) as cluster:
        async with Client(cluster, asynchronous=True, security=Security()):
            print(json.dumps({"ready": True}), flush=True)
            loop = asyncio.get_running_loop()
            while (await loop.run_in_executor(None, sys.stdin.readline)).strip() == "go":
                asked = time.time()
                cluster.scale(cfg["workers"])
                while len(cluster.scheduler.workers) < cfg["workers"]:
                    if time.time() - asked > 300:  # a job that never joins (seen once: 3 of 4 ran)
                        raise SystemExit(f"{len(cluster.scheduler.workers)} of {cfg['workers']} workers joined in 300 s")
                    await asyncio.sleep(0.05)
                joined = time.time()
                cluster.scale(0)
                while cluster.workers or cluster.scheduler.workers:  # back to zero: its jobs ended
                    await asyncio.sleep(0.2)
                print(json.dumps({"seconds": joined - asked}), flush=True)

asyncio.run(main(json.loads(sys.argv[1])))
'''


def toppipe_round(session, workers: int) -> float:
    """``scale(workers)`` on the empty pool to that many of its workers joined; then back to zero."""
    asked = time.monotonic()
    session.scale(workers, pool=POOL)
    wait(lambda: sum(w.pool == POOL for w in session.workers()) >= workers, 300, f"{workers} workers of pool {POOL}", interval=0.05)
    joined = time.monotonic() - asked
    session.scale(0, pool=POOL)
    wait(lambda: pool_empty(session), 300, f"pool {POOL} back to zero")
    return joined


def raw_round(raw: RawCluster) -> float:
    raw.proc.stdin.write("go\n")
    raw.proc.stdin.flush()
    return raw.read()["seconds"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    lab = load_lab()
    from deploy.inventory import load_site

    site = load_site(REPO / INVENTORY)

    def setup(session):
        raw = RawCluster(lab, site.host_root(site.scheduler_host), RAW_SCALE_SCRIPT, workers=args.workers)
        return raw, {"toppipe": lambda: toppipe_round(session, args.workers), "dask-jobqueue": lambda: raw_round(raw)}

    rounds, left = side_by_side(lab, site, args.rounds, setup)
    medians = {side: statistics.median(found) for side, found in rounds.items()}
    print(f"scale({args.workers}) to {args.workers} workers joined, median of {args.rounds} rounds:")
    for side, seconds in medians.items():
        print(f"  {side:<16}{seconds:>7.2f} s   ({', '.join(f'{s:.2f}' for s in rounds[side])})")
    ratio = medians["toppipe"] / medians["dask-jobqueue"]
    print(f"ratio toppipe/dask-jobqueue {ratio:.2f}  {'ok' if ratio <= 1.10 else 'SLOW'} (target <= 1.10)")
    if left:
        print(f"left behind on login: {'; '.join(left)}")
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
