"""An adaptive Slurm pool's arithmetic (``PoolAdaptive.target``) and which of its jobs it ends
first (``SlurmPool.least_useful``), on a fake of what they read of the scheduler: tasks with no
worker (and their resource restrictions), queued tasks, workers with resources and processing."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from toppipe.agent_pools import PoolAdaptive, SlurmPool

COMMON = {"python": "python", "job_name": "toppipe-t", "workdir": "/shared/t/slurm"}


class _Cluster:
    """What a Slurm pool reads of the agent's SLURMCluster: its job class, worker specs and scheduler."""

    job_cls = object
    _job_kwargs: dict = {}

    def __init__(self, scheduler):
        self.worker_spec, self.workers = {}, {}
        self.scheduler = scheduler


class _Task:
    """A task as the pools read it: what it asks of a worker (None: nothing)."""

    def __init__(self, restrictions: dict[str, float] | None):
        self.resource_restrictions = restrictions


def _scheduler() -> SimpleNamespace:
    # dask's unrunnable is a dict of TaskState -> time, queued a set of TaskStates
    return SimpleNamespace(workers={}, unrunnable={}, queued=set())


def _pool(scheduler, name: str, cores: int = 1, processes: int = 1, **resources: float) -> SlurmPool:
    config = {"name": name, "kind": "slurm", "threads": cores // processes, "memory": "1GiB", "walltime": "00:30:00",
              "cores": cores, "processes": processes, "resources": resources}  # fmt: skip
    return SlurmPool(_Cluster(scheduler), config, COMMON, "t")


def _waiting(scheduler, count: int, **restrictions: float) -> None:
    """*count* tasks with no worker that can run them, asking for *restrictions*."""
    for _ in range(count):
        scheduler.unrunnable[_Task(dict(restrictions) or None)] = 0.0


def _queued(scheduler, count: int) -> None:
    for _ in range(count):
        scheduler.queued.add(_Task(None))


def _join(pool: SlurmPool, worker_name: str, running: int = 0) -> None:
    """A worker of *pool* named *worker_name* joins, running *running* tasks."""
    pool.scheduler.workers[f"tls://{worker_name}"] = SimpleNamespace(
        name=worker_name, resources=dict(pool.offer), processing={object() for _ in range(running)}
    )


def _target(pool: SlurmPool) -> int:
    return asyncio.run(PoolAdaptive(pool).target())


@pytest.fixture
def pools():
    scheduler = _scheduler()
    return scheduler, _pool(scheduler, "slurm"), _pool(scheduler, "bigmem", bigmem=1)


def test_an_idle_pool_targets_no_job(pools):
    _, slurm, bigmem = pools
    assert _target(slurm) == 0 and _target(bigmem) == 0


def test_tasks_that_need_bigmem_count_for_the_bigmem_pool_only(pools):
    scheduler, slurm, bigmem = pools
    _waiting(scheduler, 3, bigmem=1)
    assert _target(bigmem) == 3  # one thread a job
    assert _target(slurm) == 0


def test_tasks_of_a_pool_count_for_it_only(pools):
    scheduler, slurm, bigmem = pools
    _waiting(scheduler, 2, **{"pool:bigmem": 1})
    assert (_target(bigmem), _target(slurm)) == (2, 0)


def test_queued_unrestricted_tasks_count_for_the_generic_pool_only(pools):
    scheduler, slurm, bigmem = pools
    _queued(scheduler, 5)
    assert _target(slurm) == 5 and _target(bigmem) == 0
    wide = _pool(scheduler, "wide", cores=4)
    assert _target(wide) == 2  # 5 tasks, 4 threads a job


def test_tasks_for_any_slurm_worker_count_for_the_generic_pool_only(pools):
    scheduler, slurm, bigmem = pools
    _waiting(scheduler, 4, slurm=1)
    assert _target(slurm) == 4
    assert _target(bigmem) == 0


def test_running_tasks_keep_their_jobs_in_the_target(pools):
    scheduler, _, bigmem = pools
    bigmem.add(1)
    _join(bigmem, "bigmem.0", running=1)
    _waiting(scheduler, 2, bigmem=1)
    assert _target(bigmem) == 3


def test_busy_jobs_are_never_below_the_target():
    scheduler = _scheduler()
    pool = _pool(scheduler, "pairs", cores=2, processes=2)  # two 1-thread workers a job
    pool.add(2)
    _join(pool, "pairs.0-0", running=1)
    _join(pool, "pairs.0-1")
    _join(pool, "pairs.1-1", running=1)
    assert pool.busy_jobs() == {"pairs.0", "pairs.1"}
    assert _target(pool) == 2  # 2 tasks would fit one job, but both jobs run one


def test_least_useful_ends_jobs_not_joined_first_then_idle_then_busy(pools):
    _, _, bigmem = pools
    bigmem.add(5)
    _join(bigmem, "bigmem.0", running=1)
    _join(bigmem, "bigmem.1")
    _join(bigmem, "bigmem.3")
    _join(bigmem, "bigmem.4", running=2)
    # not joined: 2; idle: 1, 3; busy: 0, 4 (the newest first in each)
    assert bigmem.least_useful(5) == ["bigmem.2", "bigmem.3", "bigmem.1", "bigmem.4", "bigmem.0"]
    assert bigmem.least_useful(1) == ["bigmem.2"]


def test_adapting_down_closes_idle_jobs_only(pools):
    _, _, bigmem = pools
    bigmem.add(3)
    _join(bigmem, "bigmem.0", running=1)
    _join(bigmem, "bigmem.1")
    adaptive = PoolAdaptive(bigmem)
    assert asyncio.run(adaptive.workers_to_close(0)) == ["bigmem.2", "bigmem.1"]
    assert asyncio.run(adaptive.workers_to_close(2)) == ["bigmem.2"]


def test_another_pools_workers_are_not_this_pools(pools):
    _, slurm, bigmem = pools
    slurm.add(1)
    bigmem.add(1)
    _join(slurm, "slurm.0", running=1)
    assert bigmem.joined_jobs() == set() and slurm.busy_jobs() == {"slurm.0"}
    assert bigmem.least_useful(1) == ["bigmem.0"]


def test_pool_a_and_pool_a_1_never_share_a_worker_name(pools):
    scheduler = pools[0]
    a, a_1 = _pool(scheduler, "a", cores=2, processes=2), _pool(scheduler, "a-1", cores=2, processes=2)
    a.add(2)
    a_1.add(1)
    workers_a = {f"{job}{suffix}" for job in a.jobs for suffix in a.spec["group"]}
    workers_a_1 = {f"{job}{suffix}" for job in a_1.jobs for suffix in a_1.spec["group"]}
    assert not workers_a & workers_a_1
    assert {a.job_of(w) for w in workers_a} == set(a.jobs) and {a_1.job_of(w) for w in workers_a_1} == set(a_1.jobs)
