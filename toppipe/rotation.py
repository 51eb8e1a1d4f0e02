"""Replace Slurm workers before their walltime, replacement first, many side by side.

A worker retiring with no peer to take its data is a known livelock of dask
on batch systems, so the order is: submit a spare job, wait until its worker
has joined, retire the old worker (it takes no new task, finishes those it
runs, and its data moves to the peers, the spare among them), then cancel
the old job. :func:`plan` says which workers start that now: each worker has
its own replacement time, staggered by its name over half the margin, so
workers that joined together (and then their successors) are not replaced in
one burst; a limit on spare jobs holds back only workers that can still
wait.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from dataclasses import dataclass

logger = logging.getLogger("toppipe.rotation")


@dataclass(frozen=True)
class SlurmWorker:
    name: str
    address: str
    joined: float


def walltime_seconds(walltime: str) -> int:
    """Slurm's [D-]HH:MM:SS (or MM:SS) as seconds."""
    days, _, clock = walltime.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    hours, minutes, secs = parts
    return int(days or 0) * 86400 + hours * 3600 + minutes * 60 + secs


def margin_seconds(walltime_seconds: int) -> int:
    """How long before the walltime a worker starts to be replaced."""
    return max(30, walltime_seconds // 5)


def due(workers: list[SlurmWorker], walltime_seconds: int, now: float) -> SlurmWorker | None:
    """The oldest worker whose age is past walltime minus the margin, if any (one at a time, with
    no stagger: :func:`plan` replaces it for pools that start many workers together)."""
    limit = walltime_seconds - margin_seconds(walltime_seconds)
    old = [w for w in workers if now - w.joined >= limit]
    return min(old, key=lambda w: w.joined) if old else None


def join_timeout_seconds(walltime_seconds: int) -> float:
    """How long a rotation waits for its spare to join; the old worker then drains (:func:`drain_seconds`)."""
    return margin_seconds(walltime_seconds) / 2


def seconds_left(worker: SlurmWorker, walltime_seconds: int, now: float) -> float:
    """The walltime *worker* has left at *now* (counted from when it joined: Slurm's end comes a little sooner)."""
    return worker.joined + walltime_seconds - now


def drain_seconds(worker: SlurmWorker, walltime_seconds: int, now: float) -> float:
    """How long the retiring *worker* may finish the tasks it computes: until its walltime (half the
    join timeout at least), since closing it sooner computes those tasks twice."""
    return max(join_timeout_seconds(walltime_seconds) / 2, seconds_left(worker, walltime_seconds, now))


def last_call_seconds(walltime_seconds: int) -> float:
    """The walltime a worker must have left when its rotation starts: the spare's join timeout plus
    the drain, so that even a slow rotation ends before Slurm kills the worker."""
    return join_timeout_seconds(walltime_seconds) * 1.5


def replacement_time(worker: SlurmWorker, walltime_seconds: int) -> float:
    """When *worker* is due: the margin before its walltime, and a stable share of half the margin
    earlier still, from its name, so that workers that joined together are due over that window."""
    margin = margin_seconds(walltime_seconds)
    return worker.joined + walltime_seconds - margin - _stagger_share(worker.name) * margin / 2


@functools.lru_cache(maxsize=4096)
def _stagger_share(name: str) -> float:
    """A number in [0, 1) that depends on *name* only (the same in every process, unlike hash())."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big") / 2**64


def plan(
    workers: list[SlurmWorker],
    walltime_seconds: int,
    now: float,
    rotating: set[str],
    max_starting: int | None,
    *,
    last_call: float | None = None,
) -> list[SlurmWorker]:
    """The workers whose rotation starts now, the nearest walltime first: each one past its
    :func:`replacement_time` and not in *rotating*. With *max_starting* (the job slots free now:
    each rotation holds one job more than the pool, its spare, until the old job is cancelled), at
    most that many; but a worker with at most *last_call* seconds of walltime left (default
    :func:`last_call_seconds`) is never held back: Slurm would kill it in the middle of a task."""
    last_call = last_call_seconds(walltime_seconds) if last_call is None else last_call
    waiting = sorted(
        (
            w
            for w in workers
            if w.name not in rotating
            and (now >= replacement_time(w, walltime_seconds) or seconds_left(w, walltime_seconds, now) <= last_call)
        ),
        key=lambda w: (w.joined, replacement_time(w, walltime_seconds), w.name),
    )
    if max_starting is None:
        return waiting
    urgent = sum(1 for w in waiting if seconds_left(w, walltime_seconds, now) <= last_call)  # they come first
    return waiting[: max(urgent, max_starting)]


#: How often a draining worker is asked whether it still computes (a message to it each time).
DRAIN_POLL_SECONDS = 0.5


async def retire(scheduler, address: str, drain_timeout: float) -> None:
    """Retire the worker at *address* without computing a task twice: it takes no new task and
    hands its results over; the tasks it is computing then finish (for *drain_timeout* seconds at
    most, long-running ones excepted); then what they made moves too and it closes. Tasks queued
    on it that it has not started go to other workers (a retiring worker starts none). A task
    still computing past *drain_timeout* is computed again elsewhere, as when a worker dies."""
    await scheduler.retire_workers(workers=[address], close_workers=False, remove=False)
    deadline = time.monotonic() + drain_timeout
    while time.monotonic() < deadline and await _computing(scheduler, address):
        await asyncio.sleep(DRAIN_POLL_SECONDS)
    await scheduler.retire_workers(workers=[address], close_workers=True)


async def _computing(scheduler, address: str) -> bool:
    """Whether the worker is computing a task (a seceded, long-running one does not count). Its
    own thread table says: the scheduler's view also counts tasks queued there, which a retiring
    worker, paused by dask, never starts."""
    ws = scheduler.workers.get(address)
    keys = [ts.key for ts in ws.processing if ts not in ws.long_running] if ws is not None else []
    if not keys:
        return False
    try:
        return bool(await scheduler.rpc(address).call_stack(keys=keys))
    except OSError:  # (gone: nothing left to wait for)
        return False
