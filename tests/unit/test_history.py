"""The agent's resource history: one sample from the scheduler's workers and the Slurm queue,
throughput between samples, the ring buffer's bound, and the task counter on a real scheduler."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from toppipe.history import History, TaskCounter, sample


def _worker(name, host, cpu, memory, pool="hosts", processing=0):
    return SimpleNamespace(name=name, host=host, metrics={"cpu": cpu, "memory": memory},
                           resources={f"pool:{pool}": 1.0, "host": 1.0}, processing=set(range(processing)))  # fmt: skip


def test_a_sample_adds_up_each_hosts_workers_and_counts_the_queue():
    workers = {"tls://a:1": _worker("node1-0", "10.0.0.1", 50.0, 100), "tls://a:2": _worker("node1-1", "10.0.0.1", 25.0, 50),
               "tls://b:1": _worker("slurm.0", "10.0.0.2", 100.0, 10, pool="slurm", processing=2)}  # fmt: skip
    queue = [{"state": "RUNNING"}, {"state": "PENDING"}, {"state": "PENDING"}]
    found = sample(workers, done=7, failed=1, queue=queue, now=1000.0)
    assert found["hosts"]["10.0.0.1"] == {"cpu": 75.0, "memory": 150, "workers": 2}
    assert found["workers"]["slurm.0"] == {"host": "10.0.0.2", "pool": "slurm", "cpu": 100.0, "memory": 10, "processing": 2}
    assert found["slurm"] == {"pending": 2, "running": 1} and (found["done"], found["failed"]) == (7, 1)


def test_throughput_is_tasks_per_second_between_samples_and_old_samples_go():
    history = History(keep_seconds=30, interval=10)
    for i, done in enumerate((0, 50, 80, 80)):
        history.add(sample({}, done=done, failed=0, queue=[], now=100.0 + 10 * i))
    found = history.since(0)
    assert len(found) == 3  # 30 s of 10 s samples: the first is gone
    assert [s["throughput"] for s in found] == [0.0, 3.0, 0.0]
    assert [s["time"] for s in history.since(115)] == [120.0, 130.0]


def test_the_counter_counts_finished_and_failed_tasks_on_a_real_scheduler():
    from distributed import Client, Scheduler, Worker

    def boom():
        raise ValueError("no")

    async def main():
        async with Scheduler(dashboard_address=":0") as scheduler:
            counter = TaskCounter()
            scheduler.add_plugin(counter)
            async with Worker(scheduler.address), Client(scheduler.address, asynchronous=True) as client:
                await client.gather(client.map(lambda i: i, range(5)))
                failing = client.submit(boom)
                await asyncio.wait([asyncio.ensure_future(failing)])
            return counter.done, counter.failed

    assert asyncio.run(main()) == (5, 1)
