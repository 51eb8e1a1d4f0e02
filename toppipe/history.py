"""The site's recent resource history: CPU and memory per host and per worker, task
throughput, and the Slurm queue, kept by the agent for the last hours.

Nothing new runs on the hosts: the agent samples what its scheduler already holds
(each worker's heartbeat metrics, the ones dask's Prometheus endpoint exports) and
the Slurm queue of its one ``squeue`` poller, every SAMPLE_SECONDS, into a ring
buffer. Sessions and the site dashboard read it with the ``toppipe_history`` handler.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

#: Seconds between two samples, and how long samples are kept.
SAMPLE_SECONDS = 10.0
KEEP_SECONDS = 6 * 3600


class TaskCounter(SchedulerPlugin):
    """Counts tasks that finished (in memory) or failed, since the agent started."""

    name = "toppipe-task-counter"

    def __init__(self):
        self.done = 0
        self.failed = 0

    def transition(self, key, start, finish, *args, **kwargs) -> None:
        if finish == "memory" and start == "processing":
            self.done += 1
        elif finish == "erred" and start == "processing":
            self.failed += 1


def sample(workers: dict[str, Any], done: int, failed: int, queue: list[dict], now: float) -> dict:
    """One sample from the scheduler's workers (address -> WorkerState), the task counts and the
    Slurm queue (pure, tested): per worker and per host CPU (%) and memory (bytes)."""
    by_worker, by_host = {}, {}
    for address, ws in workers.items():
        metrics = getattr(ws, "metrics", None) or {}
        cpu, memory = float(metrics.get("cpu") or 0.0), int(metrics.get("memory") or 0)
        pool = next((k.removeprefix("pool:") for k in (ws.resources or {}) if k.startswith("pool:")), None)
        by_worker[str(ws.name)] = {"host": ws.host, "pool": pool, "cpu": cpu, "memory": memory, "processing": len(ws.processing)}
        host = by_host.setdefault(ws.host, {"cpu": 0.0, "memory": 0, "workers": 0})
        host["cpu"] += cpu
        host["memory"] += memory
        host["workers"] += 1
    states = [job.get("state", "") for job in queue]
    slurm = {"pending": states.count("PENDING"), "running": states.count("RUNNING")}
    return {"time": now, "workers": by_worker, "hosts": by_host, "done": done, "failed": failed, "slurm": slurm}


class History:
    """The last KEEP_SECONDS of samples; each answer adds the tasks per second since the sample before."""

    def __init__(self, keep_seconds: float = KEEP_SECONDS, interval: float = SAMPLE_SECONDS):
        self.interval = interval
        self.samples: deque[dict] = deque(maxlen=max(2, int(keep_seconds / interval)))

    def add(self, found: dict) -> None:
        self.samples.append(found)

    def since(self, after: float = 0.0) -> list[dict]:
        """Samples taken after *after* (seconds since the epoch), each with ``throughput`` (tasks/s)."""
        found, before = [], None
        for current in self.samples:
            if current["time"] > after:
                elapsed = current["time"] - before["time"] if before else 0.0
                rate = (current["done"] - before["done"]) / elapsed if before and elapsed > 0 else 0.0
                found.append({**current, "throughput": max(0.0, rate)})
            before = current
        return found


async def keep_sampling(agent, history: History, counter: TaskCounter) -> None:
    """Every interval, one sample of *agent*'s scheduler and Slurm queue."""
    import asyncio

    while True:
        queue = await agent.slurm_queue()
        history.add(sample(agent.scheduler.workers, counter.done, counter.failed, queue, time.time()))
        await asyncio.sleep(history.interval)
