"""The site agent's worker pools: one scheduler, many kinds of worker.

A Slurm pool is a template of dask-jobqueue job (``SLURMJob`` with its partition,
size, GRES...) whose jobs are entries of the agent's one ``SLURMCluster``'s
``worker_spec``, named ``<pool>-<n>``. Scaling a pool adds entries, or removes
its own (jobs not started yet first, then idle workers, retired with their data
handed over); it never touches another pool's. Each pool adapts on its own
(:class:`PoolAdaptive`, dask's ``AdaptiveCore``), counting only the tasks that
fit it. Host pools are the workers group's services; the agent knows what they
offer, to place tasks and to refuse tasks that no pool can run
(:class:`UnplaceableTasks`).

Every worker carries its pool as the dask resource ``pool:<name>``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from typing import Any

from distributed.deploy.adaptive_core import AdaptiveCore
from distributed.diagnostics.plugin import SchedulerPlugin
from tornado.ioloop import PeriodicCallback

from toppipe import rotation
from toppipe.pool_resources import POOL_PREFIX, fits, marker, unplaceable_message, worker_offer

logger = logging.getLogger("toppipe.agent")

#: Seconds between two looks of an adaptive pool at the load, and looks before an idle job ends.
ADAPT_INTERVAL = 1.0
ADAPT_WAIT_COUNT = 5
#: Seconds a busy worker of a pool scaled down may take to finish what it runs.
DRAIN_SECONDS = 300


def slurm_job_options(base: dict[str, Any], pool: dict[str, Any], common: dict[str, Any], site: str) -> dict[str, Any]:
    """SLURMJob keyword arguments for *pool*, from the cluster's own (*base*: security, protocol...)
    and the agent's config (pure, tested)."""
    shared = common["workdir"]
    resources = ",".join(f"{k}={v:g}" for k, v in pool_offer(pool).items())
    directives = [f"--chdir={shared}"]
    directives += [f"--qos={pool['qos']}"] if pool.get("qos") else []
    directives += [f"--gres={pool['gres']}"] if pool.get("gres") else []
    directives += [f"--constraint={pool['constraint']}"] if pool.get("constraint") else []
    directives += list(pool.get("job_directives") or ())
    options = {
        **base,
        "queue": pool.get("partition"),
        "account": pool.get("account"),
        "walltime": pool["walltime"],
        "cores": pool["cores"],
        "processes": pool.get("processes", 1),
        "memory": pool["memory"],
        "python": common["python"],
        "job_name": common["job_name"],
        "log_directory": f"{shared}/logs",
        "job_extra_directives": directives,
        "job_script_prologue": [f"export TOPPIPE_SERVICE={site}/slurm-worker"],
        # the worker's HTTP server (health, metrics) has no auth: loopback only, like host workers'
        "worker_extra_args": ["--resources", resources, "--no-dashboard", "--dashboard-address", "127.0.0.1:0"],
        "local_directory": "$TMPDIR" if pool.get("local_scratch") else f"{shared}/work",
    }
    return {k: v for k, v in options.items() if v is not None}


def pool_offer(pool: dict[str, Any]) -> dict[str, float]:
    """What each worker of a pool (as in the agent's config) offers to tasks."""
    return worker_offer(pool["name"], pool["kind"], pool["threads"], pool.get("resources"))


class SlurmPool:
    """One Slurm pool's jobs in the agent's SLURMCluster."""

    def __init__(self, cluster, config: dict[str, Any], common: dict[str, Any], site: str):
        self.cluster = cluster
        self.config = config
        self.name = config["name"]
        self.processes = int(config.get("processes", 1))
        self.max_jobs = int(config.get("max_jobs", 8))
        self.offer = pool_offer(config)
        options = slurm_job_options(cluster._job_kwargs, config, common, site)
        self.spec: dict[str, Any] = {"cls": cluster.job_cls, "options": options}
        if self.processes > 1:
            self.spec["group"] = [f"-{i}" for i in range(self.processes)]
        self.jobs: list[str] = []  # spec names of this pool's jobs, oldest first
        # whether it adapts to tasks that ask for no pool in particular: one pool of a site does (Agent.start)
        self.catch_all = not any(k not in ("slurm", "host") and not k.startswith(POOL_PREFIX) for k in self.offer)
        self._numbers = itertools.count()
        self.adaptive: PoolAdaptive | None = None

    # -- what the pool has -------------------------------------------------

    @property
    def scheduler(self):
        return self.cluster.scheduler

    def job_of(self, worker_name: str) -> str | None:
        name = str(worker_name)
        if name in self.jobs:
            return name
        job = name.rpartition("-")[0]
        return job if job in self.jobs else None

    def workers(self) -> dict[str, Any]:
        """Address -> WorkerState of this pool's joined workers."""
        key = marker(self.name)
        return {a: ws for a, ws in self.scheduler.workers.items() if key in ws.resources}

    def joined_jobs(self) -> set[str]:
        return {j for j in (self.job_of(ws.name) for ws in self.workers().values()) if j}

    def busy_jobs(self) -> set[str]:
        return {j for j in (self.job_of(ws.name) for ws in self.workers().values() if ws.processing) if j}

    def slurm_job_ids(self) -> dict[str, str | None]:
        return {name: getattr(self.cluster.workers.get(name), "job_id", None) for name in self.jobs}

    # -- scaling -----------------------------------------------------------

    def jobs_for(self, workers: int) -> int:
        return min(self.max_jobs, math.ceil(workers / self.processes))

    async def scale_jobs(self, jobs: int) -> None:
        """Keep *jobs* jobs of this pool: add new ones, or end the least useful of its own."""
        jobs = min(max(0, jobs), self.max_jobs)
        if jobs > len(self.jobs):
            self.add(jobs - len(self.jobs))
            await self.cluster._correct_state()
        elif jobs < len(self.jobs):
            await self.remove(self.least_useful(len(self.jobs) - jobs))

    def add(self, count: int) -> list[str]:
        names = []
        for _ in range(count):
            # "<pool>.<n>": no pool name holds a dot, so pool a's job a.1 (workers a.1-0...) is not pool a-1's
            name = f"{self.name}.{next(self._numbers)}"
            while name in self.cluster.worker_spec:
                name = f"{self.name}.{next(self._numbers)}"
            self.cluster.worker_spec[name] = self.spec
            self.jobs.append(name)
            names.append(name)
        return names

    def least_useful(self, count: int) -> list[str]:
        """*count* of the pool's jobs to end: not joined yet (newest first), then idle, then busy ones."""
        joined, busy = self.joined_jobs(), self.busy_jobs()
        waiting = [j for j in reversed(self.jobs) if j not in joined]
        idle = [j for j in reversed(self.jobs) if j in joined and j not in busy]
        working = [j for j in reversed(self.jobs) if j in busy]
        return (waiting + idle + working)[:count]

    async def remove(self, names: list[str], drain_seconds: float = DRAIN_SECONDS) -> None:
        """End these jobs of the pool: their workers retire first (tasks they run finish, data moves)."""
        names = [n for n in names if n in self.jobs]
        addresses = [a for a, ws in self.workers().items() if self.job_of(ws.name) in names]
        await asyncio.gather(*(rotation.retire(self.scheduler, a, drain_timeout=drain_seconds) for a in addresses))
        for name in names:
            self.jobs.remove(name)
            self.cluster.worker_spec.pop(name, None)
        await self.cluster._correct_state()

    # -- adaptivity --------------------------------------------------------

    def adapt(self, minimum: int, maximum: float) -> None:
        self.stop_adapting()
        self.adaptive = PoolAdaptive(self, minimum=minimum, maximum=maximum)
        self.adaptive.start()

    def stop_adapting(self) -> None:
        if self.adaptive is not None:
            self.adaptive.stop()
            self.adaptive = None

    def waiting_slots(self, generic: bool) -> int:
        """Threads the tasks waiting for this pool would use: tasks with no worker that fit it (for a
        pool that offers something special, only those that ask for it or for the pool), and (for a
        pool that offers nothing special) tasks queued for lack of threads anywhere."""
        scheduler = self.scheduler
        own = {name for name in self.offer if name not in ("slurm", "host")}  # its marker and its special resources
        waiting = sum(1 for ts in scheduler.unrunnable if fits(ts.resource_restrictions, self.offer)
                      and (generic or own & set(ts.resource_restrictions or ())))  # fmt: skip
        if generic:
            waiting += len(scheduler.queued)
        return waiting

    def running_slots(self) -> int:
        return sum(len(ws.processing) for ws in self.workers().values())

    def describe(self) -> dict[str, Any]:
        adaptive = self.adaptive
        return {
            "name": self.name,
            "kind": "slurm",
            "partition": self.config.get("partition"),
            "offer": self.offer,
            "jobs": len(self.jobs),
            "workers": len(self.workers()),
            "pending_jobs": len(self.jobs) - len(self.joined_jobs()),
            "processes": self.processes,
            "max_jobs": self.max_jobs,
            "walltime": self.config["walltime"],
            "adaptive": {"minimum": adaptive.minimum, "maximum": adaptive.maximum} if adaptive else None,
        }


class PoolAdaptive(AdaptiveCore):
    """dask's adaptive core for one pool, in jobs: counts only the tasks that fit the pool and
    closes only its idle jobs, every ADAPT_INTERVAL seconds."""

    def __init__(self, pool: SlurmPool, minimum: int = 0, maximum: float = math.inf):
        super().__init__(minimum=minimum, maximum=maximum if math.isinf(maximum) else int(maximum), wait_count=ADAPT_WAIT_COUNT)
        self.pool = pool
        self._callback: PeriodicCallback | None = None

    def start(self) -> None:
        self._callback = PeriodicCallback(self._adapt_logged, ADAPT_INTERVAL * 1000)
        self._callback.start()

    def stop(self) -> None:
        if self._callback is not None:
            self._callback.stop()
            self._callback = None

    async def _adapt_logged(self) -> None:
        try:
            await self.adapt()
        except Exception:  # noqa: BLE001 - keep adapting; the next look tries again
            logger.exception("adapting pool %s failed", self.pool.name)

    # the adaptive core counts workers; a pool's unit is its job (processes workers each)
    @property
    def plan(self) -> set:
        return set(self.pool.jobs)

    @property
    def requested(self) -> set:
        return {j for j in self.pool.jobs if j in self.pool.cluster.workers}

    @property
    def observed(self) -> set:
        return self.pool.joined_jobs()

    async def target(self) -> int:
        slots_per_job = max(1, int(self.pool.offer[marker(self.pool.name)]) * self.pool.processes)
        needed = self.pool.running_slots() + self.pool.waiting_slots(self.pool.catch_all)
        return max(math.ceil(needed / slots_per_job), len(self.pool.busy_jobs()))

    async def workers_to_close(self, target: int) -> list:
        idle = [j for j in self.pool.least_useful(len(self.pool.jobs)) if j not in self.pool.busy_jobs()]
        return idle[: max(0, len(self.pool.jobs) - target)]

    async def scale_up(self, n: int) -> None:
        await self.pool.scale_jobs(n)

    async def scale_down(self, workers) -> None:
        await self.pool.remove([w for w in workers if w not in self.pool.busy_jobs()])


class UnplaceableTasks(SchedulerPlugin):
    """Fails at once a task that asks for resources no pool offers (it would wait forever)."""

    name = "toppipe-unplaceable"

    def __init__(self, scheduler, offers: dict[str, dict[str, float]]):
        self.scheduler = scheduler  # add_plugin, unlike register_scheduler_plugin, does not call start()
        self.offers = offers

    def transition(self, key, start, finish, *args, **kwargs) -> None:
        if finish != "no-worker":
            return
        ts = self.scheduler.tasks.get(key)
        restrictions = ts.resource_restrictions if ts is not None else None
        if restrictions and not any(fits(restrictions, offer) for offer in self.offers.values()):
            message = unplaceable_message(restrictions, self.offers)
            asyncio.get_running_loop().call_soon(fail_task, self.scheduler, key, message)


def fail_task(scheduler, key, message: str) -> None:
    """Err the task *key* waiting for a worker, with *message* (a ValueError in the client)."""
    from distributed.core import error_message

    ts = scheduler.tasks.get(key)
    if ts is None or ts.state != "no-worker":
        return
    error = error_message(ValueError(message))
    stimulus_id = f"toppipe-unplaceable-{key}"
    recommendations, client_msgs, worker_msgs = scheduler._transition(
        key, "erred", stimulus_id, cause=key, exception=error["exception"], traceback=error["traceback"],
        exception_text=error["exception_text"], traceback_text=error["traceback_text"],
    )  # fmt: skip
    scheduler._transitions(recommendations, client_msgs, worker_msgs, stimulus_id)
    scheduler.send_all(client_msgs, worker_msgs)
