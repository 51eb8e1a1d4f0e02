"""A task whose workers were ended for memory is told so (limit, use, host); other deaths are left as dask says."""

from __future__ import annotations

from types import SimpleNamespace

from distributed.scheduler import KilledWorker

from toppipe.memory_kills import explain

WORKER = SimpleNamespace(address="tls://10.0.0.5:40001", name="node1-0", host="10.0.0.5", memory_limit=2 * 2**30)
HOSTS = {"10.0.0.5": "node1"}


def killed() -> KilledWorker:
    return KilledWorker("hog-123", WORKER, 3)


def test_a_worker_ended_for_memory_names_the_limit_the_use_and_the_host():
    events = [(1.0, {"worker": "tls://10.0.0.6:40001", "pid": 1, "rss": 1}), (2.0, {"worker": WORKER.address, "pid": 7, "rss": int(1.95 * 2**30)})]
    assert explain("hog", killed(), events, HOSTS) == (
        "task hog needs more memory than a worker has: worker node1-0 on node1 was ended at 1.95 GiB of its 2.00 GiB limit, "
        "and so was each worker that ran it before (4 in all); give the workers more memory "
        "(toppipe.workers.memory in the inventory) or the task less data"
    )


def test_a_worker_that_died_otherwise_is_left_to_dask():
    assert explain("hog", killed(), [(1.0, {"worker": "tls://10.0.0.6:40001", "pid": 1, "rss": 1})], HOSTS) is None
    assert explain("hog", RuntimeError("boom"), [(2.0, {"worker": WORKER.address, "rss": 1})], HOSTS) is None
