"""The site agent: the dask scheduler, plus Slurm workers on Slurm sites.

Runs on the scheduler host as a service (``python -m toppipe.agent CONFIG``).
On a site with Slurm it hosts a dask-jobqueue ``SLURMCluster`` whose
scheduler *is* the site's scheduler, so job submission happens here, next
to Slurm, and never on the desktop. Sessions reach it through scheduler
handlers: ``toppipe_scale``, ``toppipe_adapt``, ``toppipe_adapt_stop``, ``toppipe_pool``
and ``toppipe_workers``.

Inside a Slurm allocation (``allocation`` in its config) it hands over before its
walltime: it submits its successor with the same job script and comment, to start
once this job has ended, records the runs in flight ``interrupted`` and stops (its
Slurm workers with it). Sessions then fail in one line until the successor runs;
``run.resume()`` takes the finished tasks from the cache.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import sys
import time
from typing import Any

import yaml
from distributed.diagnostics.plugin import SchedulerPlugin

from toppipe import agent_check, agent_pools, history, pool_resources, rotation
from toppipe.run_cancel import RunCanceller

ROTATION_CHECK_SECONDS = 5


def slurm_cluster_options(config: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for the agent's SLURMCluster: its first Slurm pool's jobs (pure, tested).
    Every pool's jobs are entries of this cluster's worker_spec (:mod:`toppipe.agent_pools`)."""
    pool = slurm_pools(config)[0]
    options = agent_pools.slurm_job_options({}, pool, config["slurm"], config["site"])
    if config["slurm"].get("interface"):
        options["interface"] = config["slurm"]["interface"]
    return options


def slurm_pools(config: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in config.get("pools", ()) if p["kind"] == "slurm"]


#: The shortest time between two squeue calls of the agent.
SQUEUE_SECONDS = 5.0


async def squeue(job_name: str) -> list[dict]:
    """The jobs named *job_name* of this user: id, state, node, elapsed (one squeue call)."""
    proc = await asyncio.create_subprocess_exec(
        "squeue", "-h", "--me", "-n", job_name, "-o", "%i|%T|%N|%M",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    jobs = []
    for line in out.decode().splitlines():
        parts = line.split("|")
        if len(parts) == 4:
            jobs.append({"job_id": parts[0], "state": parts[1], "node": parts[2], "elapsed": parts[3]})
    return jobs


class Agent:
    """Owns the scheduler (and the Slurm cluster) until told to stop."""

    def __init__(self, config: dict[str, Any]):
        self.config = config
        self.cluster = None
        self.scheduler = None
        self.joined: dict[str, float] = {}
        self.recorder = None
        self._queue: tuple[float, list[dict]] | None = None
        self.handing_over: str | None = None  # why this agent stops before its successor starts
        self.pools: dict[str, agent_pools.SlurmPool] = {}
        self.history = history.History()
        self.task_counter = history.TaskCounter()

    async def start(self) -> None:
        from distributed import Scheduler
        from distributed.security import Security

        security = Security()  # TLS files and require-encryption come from DASK_CONFIG
        scheduler_options = {
            "host": self.config["host"],
            "port": self.config["port"],
            "dashboard_address": self.config["dashboard"],
            "protocol": "tls",
            "security": security,
        }
        if self.config.get("scheduler_file"):
            scheduler_options["scheduler_file"] = self.config["scheduler_file"]
        if self.config.get("allocation"):  # listening on every address: publish the one the site reaches
            from distributed.utils import get_ip

            scheduler_options["contact_address"] = f"tls://{get_ip(self.config['allocation']['reach'])}:{self.config['port']}"
        if slurm_pools(self.config):
            from dask_jobqueue import SLURMCluster

            self.cluster = await SLURMCluster(
                asynchronous=True, security=security, protocol="tls://", scheduler_options=scheduler_options,
                **slurm_cluster_options(self.config),
            )  # fmt: skip
            self.scheduler = self.cluster.scheduler
            self.pools = {p["name"]: agent_pools.SlurmPool(self.cluster, p, self.config["slurm"], self.config["site"])
                          for p in slurm_pools(self.config)}  # fmt: skip
            catch_all = [p for p in self.pools.values() if p.catch_all] or list(self.pools.values())[:1]
            for pool in self.pools.values():  # tasks for no pool in particular make one pool grow, not each
                pool.catch_all = pool is catch_all[0]
        else:
            self.scheduler = await Scheduler(**scheduler_options)
        self.scheduler.handlers.update(
            toppipe_scale=self.scale, toppipe_adapt=self.adapt, toppipe_workers=self.workers, toppipe_run_status=self.run_status,
            toppipe_slurm_queue=self.slurm_queue, toppipe_pool=self.pool, toppipe_adapt_stop=self.stop_adapting,
            toppipe_pools=self.describe_pools, toppipe_retire=self.retire, toppipe_history=self.history_since,
        )
        self.scheduler.add_plugin(self.task_counter)
        self.scheduler.add_plugin(agent_pools.UnplaceableTasks(self.scheduler, self.offers()))
        self.scheduler.add_plugin(RunCanceller(self.scheduler))
        if self.config.get("records"):
            from toppipe.recorder import RunRecorder

            # first of all: runs an earlier agent left unfinished are recorded interrupted
            self.recorder = RunRecorder(self.config["records"], spool_folder(self.config), **spool_bound(self.config))
            self.scheduler.add_plugin(self.recorder)
        for address in self.scheduler.workers:
            self.joined[address] = time.time()
        self.scheduler.add_plugin(_JoinTimes(self.joined))

    async def slurm_queue(self) -> list[dict]:
        """The site's Slurm jobs, each with its pool, from one ``squeue`` at most every SQUEUE_SECONDS
        whoever asks (every open dashboard page shares this answer: Slurm sees toppipe's query once)."""
        if self.cluster is None:
            return []
        now = time.monotonic()
        if self._queue is None or now - self._queue[0] >= SQUEUE_SECONDS:
            pools = {job: pool.name for pool in self.pools.values() for job in pool.slurm_job_ids().values() if job}
            jobs = await squeue(self.config["slurm"]["job_name"])
            self._queue = (now, [{**job, "pool": pools.get(job["job_id"])} for job in jobs])
        return self._queue[1]

    def run_status(self, run: str) -> dict | None:
        """Task states of a run, as the recorder last saw them."""
        return self.recorder.status(run) if self.recorder is not None else None

    def _slurm_pool(self, name: str | None) -> agent_pools.SlurmPool:
        """The Slurm pool *name*, or the site's first when None; ValueError naming the pools there are."""
        if not self.pools:
            raise ValueError("this site has no Slurm pool: add a slurm group (and pools) to its inventory, or scale pool='hosts'")
        if name is None:
            return next(iter(self.pools.values()))
        if name not in self.pools:
            kinds = {p["name"]: p["kind"] for p in self.config.get("pools", ())}
            what = "a hosts pool, which scales by deploy" if kinds.get(name) == "hosts" else "no pool of this site"
            raise ValueError(f"pool {name!r} is {what}; its Slurm pools: {', '.join(self.pools)}")
        return self.pools[name]

    async def scale(self, n: int, pool: str | None = None) -> dict:
        """Run *n* workers in the Slurm pool *pool* (rotated before their walltime); other pools stay as they are."""
        found = self._slurm_pool(pool)
        found.stop_adapting()
        await found.scale_jobs(found.jobs_for(n))
        return {"target": len(found.jobs) * found.processes, "pool": found.name}

    def stop_adapting(self, pool: str | None = None) -> None:
        """Keep the workers the pool has, and stop following the load."""
        self._slurm_pool(pool).stop_adapting()

    def pool(self) -> dict:
        """The default pool, for cluster objects' repr and widget: Slurm or not, its target, its adaptive range."""
        if not self.pools:
            return {"slurm": False, "target": None, "adaptive": None}
        found = self._slurm_pool(None).describe()
        return {"slurm": True, "target": found["jobs"] * found["processes"], "adaptive": found["adaptive"], "pool": found["name"]}

    def adapt(self, minimum: int, maximum: float, pool: str | None = None) -> dict:
        found = self._slurm_pool(pool)
        found.adapt(minimum=math.ceil(minimum / found.processes), maximum=maximum if math.isinf(maximum) else found.jobs_for(maximum))
        return {"minimum": minimum, "maximum": maximum, "pool": found.name}

    def history_since(self, since: float = 0.0, limit: int = 720, workers: bool = True) -> list[dict]:
        """The resource history after *since* (seconds since the epoch), its last *limit* samples
        (without each worker's line when not *workers*: what the dashboard plots)."""
        found = self.history.since(since)[-limit:]
        return found if workers else [{k: v for k, v in s.items() if k != "workers"} for s in found]

    def offers(self) -> dict[str, dict[str, float]]:
        """Pool -> what each of its workers offers (dask resources)."""
        return {p["name"]: agent_pools.pool_offer(p) for p in self.config.get("pools", ())}

    def describe_pools(self) -> list[dict]:
        """Every pool: kind, what it offers, its workers, pending jobs and limits."""
        found = []
        for config in self.config.get("pools", ()):
            if config["name"] in self.pools:
                found.append(self.pools[config["name"]].describe())
                continue
            key = pool_resources.marker(config["name"])
            workers = [ws for ws in self.scheduler.workers.values() if key in ws.resources]
            found.append({"name": config["name"], "kind": "hosts", "offer": agent_pools.pool_offer(config),
                          "workers": len(workers), "deployed": config.get("workers", 0), "hosts": config.get("hosts", []),
                          "pending_jobs": 0, "adaptive": None})  # fmt: skip
        return found

    async def retire(self, workers: list[str], drain_seconds: float = agent_pools.DRAIN_SECONDS) -> list[str]:
        """Retire these host workers: no new task, running ones finish, data moves to the others."""
        known = [w for w in workers if w in self.scheduler.workers]
        await asyncio.gather(*(rotation.retire(self.scheduler, a, drain_timeout=drain_seconds) for a in known))
        return known

    def workers(self) -> list[dict]:
        jobs = {name: job for pool in self.pools.values() for name, job in pool.slurm_job_ids().items()}
        found = []
        for address, ws in self.scheduler.workers.items():
            pool = pool_resources.pool_of(ws.resources)
            job = None
            if pool in self.pools:
                job = jobs.get(self.pools[pool].job_of(ws.name) or "")
            found.append(
                {
                    "address": address,
                    "name": str(ws.name),
                    "host": ws.host,
                    "pool": pool,
                    "slurm_job": job,
                    "since": self.joined.get(address),
                    "threads": ws.nthreads,
                    "memory_limit": ws.memory_limit,
                    "processing": len(ws.processing),
                }
            )
        return found

    def slurm_workers(self, pool: agent_pools.SlurmPool) -> list[rotation.SlurmWorker]:
        """The pool's joined jobs as rotation sees them: one per job (named by it), joined when its first worker did."""
        found: dict[str, rotation.SlurmWorker] = {}
        for address, ws in pool.workers().items():
            job, joined = pool.job_of(ws.name) or str(ws.name), self.joined.get(address, time.time())
            if job not in found or joined < found[job].joined:
                found[job] = rotation.SlurmWorker(job, address, joined)
        return list(found.values())

    async def keep_rotating(self) -> None:
        """Every few seconds, start replacing each pool's Slurm workers that near their walltime and are
        not being replaced yet. Replacements run side by side: workers that joined together must
        not wait for each other's replacement past their own walltime (Slurm would end them in the
        middle of a task, which then runs twice)."""
        rotating: dict[str, asyncio.Task] = {}
        while True:
            await asyncio.sleep(ROTATION_CHECK_SECONDS)
            rotating = {name: task for name, task in rotating.items() if not task.done()}
            for pool in self.pools.values():
                walltime = rotation.walltime_seconds(pool.config["walltime"])
                for worker in rotation.plan(self.slurm_workers(pool), walltime, time.time(), set(rotating),
                                            max_starting=max(0, pool.max_jobs - len(pool.jobs))):  # fmt: skip
                    rotating[worker.name] = asyncio.create_task(self._rotate(pool, worker, walltime))

    async def _rotate(self, pool: agent_pools.SlurmPool, worker: rotation.SlurmWorker, walltime: int) -> None:
        """Replace *worker*: a spare job of its pool first, then the old worker retires, then its job ends."""
        try:
            old = pool.job_of(worker.name)
            before = set(self.scheduler.workers)
            pool.add(1)
            await self.cluster._correct_state()
            join_timeout = rotation.join_timeout_seconds(walltime)
            deadline = time.monotonic() + join_timeout
            while not (set(pool.workers()) - before) and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
            if not (set(pool.workers()) - before):
                logging.getLogger("toppipe.agent").warning("no spare of pool %s joined within %.0f s; retiring %s anyway",
                                                           pool.name, join_timeout, worker.name)  # fmt: skip
            if old is not None:
                await pool.remove([old], drain_seconds=rotation.drain_seconds(worker, walltime, time.time()))
            logging.getLogger("toppipe.agent").info("rotated %s of pool %s before its walltime", worker.name, pool.name)
        except Exception:  # keep the agent alive; the next round tries again
            logging.getLogger("toppipe.agent").exception("rotating %s failed", worker.name)

    async def stop(self) -> None:
        for pool in self.pools.values():
            pool.stop_adapting()
        if self.recorder is not None and self.handing_over:
            self.recorder.interrupt_runs(self.handing_over)
        if self.cluster is not None:
            await self.cluster.close()  # scancels every job it submitted
        elif self.scheduler is not None:
            await self.scheduler.close()
        if self.recorder is not None:  # what is queued reaches the store, or the spool for the next agent
            await asyncio.get_running_loop().run_in_executor(None, self.recorder.close)


def spool_folder(config: dict[str, Any]) -> str:
    """Where the recorder keeps events while the record store is away: ``records_spool``, else
    ``records-spool`` beside the scheduler file (the agent's state folder)."""
    if config.get("records_spool"):
        return config["records_spool"]
    beside = os.path.dirname(config.get("scheduler_file") or "") or os.path.join(os.path.expanduser("~"), ".toppipe-agent")
    return os.path.join(beside, "records-spool")


def spool_bound(config: dict[str, Any]) -> dict[str, int]:
    """The spool's size bound, ``records_spool_bytes`` in the agent's config (default: the spool's own)."""
    return {"spool_bytes": int(config["records_spool_bytes"])} if config.get("records_spool_bytes") else {}


class _JoinTimes(SchedulerPlugin):
    """A scheduler plugin that remembers when each worker joined."""

    name = "toppipe-join-times"

    def __init__(self, joined: dict[str, float]):
        self.joined = joined

    def add_worker(self, scheduler=None, worker=None, **kwargs):
        self.joined[worker] = time.time()

    def remove_worker(self, scheduler=None, worker=None, **kwargs):
        self.joined.pop(worker, None)


def replacement_margin(walltime: int) -> int:
    """Seconds before its walltime when an agent in an allocation hands over: a tenth of it, from 1 to 15 minutes."""
    return max(60, min(900, walltime // 10))


def hand_over_in(allocation: dict[str, Any], started: float, now: float) -> float:
    """Seconds until an agent whose job started at *started* hands over (its walltime less the margin)."""
    walltime = int(allocation["walltime"])
    return max(0.0, started + walltime - replacement_margin(walltime) - now)


async def submit_successor(script: str, job: str) -> str:
    """Submit *script* again, with this job's comment, to start once job *job* has ended; the new job's id."""
    comment = await _output("squeue", "-h", "-j", job, "-o", "%k")
    options = [f"--comment={comment}"] if comment and comment != "(null)" else []
    return (await _output("sbatch", "--parsable", f"--dependency=afterany:{job}", *options, script)).split(";")[0]


async def _output(*argv: str) -> str:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"{argv[0]} exited {proc.returncode}: {err.decode().strip()}")
    return out.decode().strip()


async def hand_over(agent: Agent, config: dict[str, Any], started: float, stop: asyncio.Event) -> None:
    """Before the walltime: the successor queued, then this agent stops."""
    await asyncio.sleep(hand_over_in(config["allocation"], started, time.time()))
    job = os.environ.get("SLURM_JOB_ID", "")
    log = logging.getLogger("toppipe.agent")
    try:
        successor = await submit_successor(config["allocation"]["script"], job)
        why = f"the scheduler's Slurm job {job} reached its walltime; job {successor} takes over when it ends"
    except (OSError, RuntimeError) as error:
        why = f"the scheduler's Slurm job {job} reached its walltime and no successor was submitted ({error}); the next up submits one"
    log.warning("%s; runs in flight are recorded interrupted", why)
    agent.handing_over = why
    stop.set()


async def run(config: dict[str, Any]) -> None:
    started = time.time()
    agent = Agent(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await agent.start()
    job = f" (Slurm job {os.environ['SLURM_JOB_ID']})" if os.environ.get("SLURM_JOB_ID") else ""
    print(f"toppipe agent of site {config['site']}{job}: scheduler at {agent.scheduler.address}", file=sys.stderr, flush=True)
    helpers = [asyncio.create_task(history.keep_sampling(agent, agent.history, agent.task_counter))]
    if agent.pools:
        helpers.append(asyncio.create_task(agent.keep_rotating()))
    if config.get("allocation") and os.environ.get("SLURM_JOB_ID"):
        helpers.append(asyncio.create_task(hand_over(agent, config, started, stop)))
    await stop.wait()
    for helper in helpers:
        helper.cancel()
    await agent.stop()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m toppipe.agent CONFIG.yaml", file=sys.stderr)
        return 2
    if agent_check.main(argv):  # one line saying why; `up` checks first only when an agent runs
        return 1
    with open(argv[0]) as handle:
        config = yaml.safe_load(handle)
    asyncio.run(run(config))
    return 0


if __name__ == "__main__":
    from toppipe import quick_exit

    quick_exit.run(lambda: main(sys.argv[1:]))
