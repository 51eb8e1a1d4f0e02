"""Rotation at scale: rotation.plan's rules, and 200 Slurm workers that joined together replaced
for two generations on a fake clock (spares slow to start, old workers draining their task)."""

from __future__ import annotations

import heapq
import itertools
import random
from collections import Counter
from dataclasses import dataclass

import pytest

from toppipe import rotation
from toppipe.rotation import SlurmWorker

WALLTIME = 1800  # 30 min: margin 360 s, stagger window 180 s, last call 270 s
CHECK_SECONDS = 5  # the agent's ROTATION_CHECK_SECONDS
SPARE_START = (2.0, 60.0)  # a spare job's wait in the queue plus its worker's start
TASK_SECONDS = 60.0  # the old worker's running task has up to that much left to drain


def _workers(n: int, joined: float = 0.0) -> list[SlurmWorker]:
    return [SlurmWorker(f"SLURMCluster-{i}", f"tcp://10.0.0.{i}:4000", joined) for i in range(n)]


def test_workers_that_joined_together_are_due_over_half_the_margin_and_always_the_same_way():
    margin = rotation.margin_seconds(WALLTIME)
    times = [rotation.replacement_time(w, WALLTIME) for w in _workers(200)]
    assert times == [rotation.replacement_time(w, WALLTIME) for w in _workers(200)]
    assert all(WALLTIME - 1.5 * margin <= t <= WALLTIME - margin for t in times)
    assert max(times) - min(times) > 0.9 * margin / 2
    per_round = Counter(int(t // CHECK_SECONDS) for t in times)
    assert max(per_round.values()) <= 20  # of 200: no burst


def test_plan_starts_every_due_worker_not_rotating_yet_the_nearest_walltime_first():
    early, late = SlurmWorker("early", "tcp://e", 0.0), SlurmWorker("late", "tcp://l", 100.0)
    workers = [late, *_workers(5, joined=50.0), early]
    now = 10_000.0  # every worker is due
    planned = rotation.plan(workers, WALLTIME, now, rotating={"SLURMCluster-3"}, max_starting=None)
    assert planned[0] == early and planned[-1] == late
    assert len(planned) == 6 and "SLURMCluster-3" not in {w.name for w in planned}
    assert rotation.plan(workers, WALLTIME, now=0.0, rotating=set(), max_starting=None) == []


def test_the_limit_holds_back_only_workers_that_can_still_wait():
    last_call = rotation.last_call_seconds(WALLTIME)
    can_wait = _workers(10, joined=0.0)
    now = WALLTIME - last_call - 1  # all due, none at its last call
    assert len(rotation.plan(can_wait, WALLTIME, now, rotating=set(), max_starting=4)) == 4
    assert rotation.plan(can_wait, WALLTIME, now, rotating=set(), max_starting=0) == []
    at_last_call = _workers(3, joined=-2.0)
    planned = rotation.plan(can_wait + at_last_call, WALLTIME, now, rotating=set(), max_starting=0)
    assert [w.joined for w in planned] == [-2.0] * 3  # no free slot, but they cannot wait
    planned = rotation.plan(can_wait + at_last_call, WALLTIME, now, rotating=set(), max_starting=5)
    assert [w.joined for w in planned] == [-2.0] * 3 + [0.0] * 2  # the nearest walltime first


@dataclass
class Outcome:
    lost: list[str]  # workers Slurm ended at their walltime, in the middle of a task
    replaced: Counter  # per worker of the start, how many times its line was replaced
    least_walltime_left: float  # when an old worker's job was cancelled
    most_in_flight: int  # rotations in progress at once: each holds one job more than the pool
    most_pending: int  # spares submitted that had not joined yet, at once
    waitable_starts_over_limit: int  # starts of workers that could wait, in rounds that passed the headroom
    most_starts_per_round: int


def simulate(planner, headroom: int | None, *, workers: int = 200, until: int = 2 * WALLTIME, seed: int = 17):
    """Discrete events on a fake clock: a check every CHECK_SECONDS calls *planner* with the job slots
    free (*headroom*, the jobs allowed beyond the pool, less the rotations in progress, as the agent
    does with max_jobs); each worker it returns gets a spare that joins SPARE_START seconds later; the
    old worker then drains its running task and its job is cancelled. A worker still there at its
    walltime is lost."""
    rng = random.Random(seed)
    alive = {w.name: w for w in _workers(workers)}
    line = {name: name for name in alive}
    names = itertools.count(workers)
    rotating: set[str] = set()
    events: list[tuple[float, int, str, str]] = []  # (time, order, what, old worker's name)
    order = itertools.count()
    pending = most_pending = most_in_flight = waitable_over = most_starts = 0
    lost: list[str] = []
    replaced: Counter = Counter()
    least_left = float(WALLTIME)
    last_call = rotation.last_call_seconds(WALLTIME)
    for now in range(CHECK_SECONDS, until + 1, CHECK_SECONDS):
        while events and events[0][0] <= now:
            at, _, what, name = heapq.heappop(events)
            if what == "spare joined":
                pending -= 1
                spare = f"SLURMCluster-{next(names)}"
                alive[spare] = SlurmWorker(spare, f"tcp://{spare}", at)
                line[spare] = line[name]
                heapq.heappush(events, (at + rng.uniform(0, TASK_SECONDS), next(order), "cancelled", name))
            else:
                rotating.discard(name)
                old = alive.pop(name, None)
                if old is not None:
                    left = old.joined + WALLTIME - at
                    least_left = min(least_left, left)
                    if left < 0:
                        lost.append(name)
                    else:
                        replaced[line[name]] += 1
        for worker in [w for w in alive.values() if w.joined + WALLTIME <= now]:
            lost.append(worker.name)
            del alive[worker.name]
        free = None if headroom is None else headroom - len(rotating)
        started = planner(list(alive.values()), WALLTIME, float(now), set(rotating), free)
        for worker in started:
            assert worker.name not in rotating
            rotating.add(worker.name)
            pending += 1
            heapq.heappush(events, (now + rng.uniform(*SPARE_START), next(order), "spare joined", worker.name))
        if headroom is not None and len(rotating) > headroom:
            waitable_over += sum(1 for w in started if w.joined + WALLTIME - now > last_call)
        most_pending, most_in_flight = max(most_pending, pending), max(most_in_flight, len(rotating))
        most_starts = max(most_starts, len(started))
    return Outcome(lost, replaced, least_left, most_in_flight, most_pending, waitable_over, most_starts)


@pytest.mark.parametrize("headroom", [None, 60, 40, 10])
def test_200_workers_that_joined_together_are_all_replaced_before_their_walltime_two_generations(headroom):
    outcome = simulate(rotation.plan, headroom)
    assert outcome.lost == []
    assert outcome.least_walltime_left > 0
    assert len(outcome.replaced) == 200 and min(outcome.replaced.values()) >= 2  # successors rotate too
    assert outcome.waitable_starts_over_limit == 0  # past the headroom only for workers at their last call
    if headroom == 60:  # enough room: the headroom is never passed
        assert outcome.most_in_flight <= headroom
    if headroom is None:
        assert outcome.most_starts_per_round <= 20  # the stagger alone: no round starts 10 % of the pool


def _one_per_round(workers, walltime_seconds, now, rotating, max_starting):
    """The agent's rule before plan: the oldest due worker not rotating yet, one per check."""
    worker = rotation.due([w for w in workers if w.name not in rotating], walltime_seconds, now)
    return [worker] if worker is not None else []


def test_one_new_rotation_per_check_loses_workers_of_a_pool_that_started_together():
    outcome = simulate(_one_per_round, None)
    assert len(outcome.lost) > 50  # 200 due at once, 72 checks before the walltime


def test_a_retiring_worker_drains_until_its_walltime_and_half_the_join_timeout_at_least():
    worker = SlurmWorker("w", "tcp://w", joined=1000.0)
    assert rotation.drain_seconds(worker, 3600, now=1000.0 + 3600 - 500) == 500
    assert rotation.drain_seconds(worker, 3600, now=1000.0 + 3600) == rotation.join_timeout_seconds(3600) / 2
