"""Replace Slurm workers before their walltime, one at a time, replacement first.

A worker retiring with no peer to take its data is a known livelock of dask
on batch systems, so the order is: submit a spare job, wait until its worker
has joined, retire the old worker (it takes no new task, finishes those it
runs, and its data moves to the peers, the spare among them), then cancel
the old job. Only one worker rotates at a time, so
lifetimes end staggered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

logger = logging.getLogger("toppipe.rotation")


@dataclass(frozen=True)
class SlurmWorker:
    name: str
    address: str
    joined: float


def margin_seconds(walltime_seconds: int) -> int:
    """How long before the walltime a worker starts to be replaced."""
    return max(30, walltime_seconds // 5)


def due(workers: list[SlurmWorker], walltime_seconds: int, now: float) -> SlurmWorker | None:
    """The oldest worker whose age is past walltime minus the margin, if any."""
    limit = walltime_seconds - margin_seconds(walltime_seconds)
    old = [w for w in workers if now - w.joined >= limit]
    return min(old, key=lambda w: w.joined) if old else None


async def rotate(cluster, scheduler, worker: SlurmWorker, join_timeout: float) -> None:
    """Replace *worker*: spare first, then retire (data handed over), then cancel its job."""
    before = set(scheduler.workers)
    cluster.worker_spec.update(cluster.new_worker_spec())
    await cluster._correct_state()
    deadline = time.monotonic() + join_timeout
    while not (set(scheduler.workers) - before) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    if not (set(scheduler.workers) - before):
        logger.warning("no spare worker joined within %.0f s; retiring %s anyway", join_timeout, worker.name)
    await retire(scheduler, worker.address, drain_timeout=join_timeout / 2)
    await cluster.scale_down([worker.name])
    logger.info("rotated %s before its walltime", worker.name)


async def retire(scheduler, address: str, drain_timeout: float) -> None:
    """Retire the worker at *address* without computing a task twice: it takes no new task and
    hands its results over; the tasks it runs then may finish (for *drain_timeout* seconds at
    most, long-running ones excepted); then what they made moves too and it closes. A task still
    running past that is computed again elsewhere, as when a worker dies."""
    await scheduler.retire_workers(workers=[address], close_workers=False, remove=False)
    deadline = time.monotonic() + drain_timeout
    while time.monotonic() < deadline and _running(scheduler, address):
        await asyncio.sleep(0.1)
    await scheduler.retire_workers(workers=[address], close_workers=True)


def _running(scheduler, address: str) -> bool:
    """Whether the worker still has tasks to finish (a seceded, long-running task does not count)."""
    ws = scheduler.workers.get(address)
    return ws is not None and any(ts not in ws.long_running for ts in ws.processing)

