"""A map whose group task's worker retires (a Slurm worker rotated before its walltime) loses no
element and computes none twice: on a real dask cluster of worker processes, here.

The group task waits for its elements without holding a thread, so retiring its worker does not
wait for it: the worker closes and the group runs again elsewhere. The elements it had sent, some
running on other workers at that moment, must go on and be taken over by the new group, not be
dropped with the old worker's client and computed again.
"""

from __future__ import annotations

import asyncio
import re
import time

import distributed

from tests import marked_map
from tests.conftest import until
from toppipe import rotation
from toppipe.pipeline.launch import start
from toppipe.pipeline.loader import load

SIZE = 12
#: A map element's dask key: the group's first task's key, then ``-e<index>`` (launch._ElementKeys).
ELEMENT_KEY = re.compile(r"-e\d+$")


def _group_worker(dask_scheduler):
    """The address of the worker that runs the (only) map group, once it runs."""
    for key, ts in dask_scheduler.tasks.items():
        if str(key).endswith("-group") and ts.processing_on is not None:
            return ts.processing_on.address
    return None


async def _retire(dask_scheduler, address):
    await rotation.retire(dask_scheduler, address, drain_timeout=60)


def _dropped_elements(dask_scheduler):
    """Elements the scheduler released while a worker had them because the client that submitted
    them went away (the old group's worker): a new group's elements of those keys would be new
    tasks, computed again beside the old ones."""
    return sorted({key for key, start, finish, _, stimulus, *_ in dask_scheduler.transition_log
                   if ELEMENT_KEY.search(str(key)) and (start, finish) == ("processing", "released")
                   and stimulus.startswith(("remove-client", "client-releases-keys"))})  # fmt: skip


def test_retiring_the_group_s_worker_computes_no_element_twice(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    pipeline = load(marked_map.write(tmp_path))
    with marked_map.cluster(3) as cluster:
        with distributed.Client(cluster) as client:
            session = marked_map.session(client, tmp_path)
            run = start(session, pipeline, on="hosts", params={"n": SIZE, "folder": str(marks)})
            until(lambda: any(marks.iterdir()), 60)  # elements are running
            group_worker = client.run_on_scheduler(_group_worker)
            assert group_worker is not None
            cluster.scale(4)  # the spare joins first, as in a rotation
            client.wait_for_workers(4, timeout=60)
            client.run_on_scheduler(_retire, address=group_worker)
            assert group_worker not in client.scheduler_info()["workers"]
            assert client.gather(run.futures["total"]).value == sum(i**3 for i in range(SIZE))
            assert client.run_on_scheduler(_dropped_elements) == []
    counts = {int(path.name): len(path.read_text()) for path in marks.iterdir()}
    assert sorted(counts) == list(range(SIZE))
    assert {i: n for i, n in counts.items() if n != 1} == {}, "elements computed more than once"


def test_a_retiring_worker_drains_what_it_computes_not_what_is_queued_there():
    """dask pauses a retiring worker: a task queued there never starts, so the drain waits only
    for the task it computes (when it closes, the queued one goes to another worker)."""
    async def scenario():
        async with distributed.Scheduler(dashboard_address=":0", port=0) as scheduler, \
                distributed.Worker(scheduler.address, nthreads=1) as worker, \
                distributed.Worker(scheduler.address, nthreads=1), \
                distributed.Client(scheduler.address, asynchronous=True) as client:  # fmt: skip
            first = client.submit(time.sleep, 1.5, key="first", workers=[worker.address])
            queued = client.submit(time.sleep, 0, key="queued", workers=[worker.address])
            while not worker.state.executing:
                await asyncio.sleep(0.01)
            await scheduler.retire_workers(workers=[worker.address], close_workers=False, remove=False)
            assert await rotation._computing(scheduler, worker.address)
            await first
            while await rotation._computing(scheduler, worker.address):
                await asyncio.sleep(0.05)
            assert [ts.key for ts in scheduler.workers[worker.address].processing] == ["queued"]  # never started
            assert queued.status == "pending"

    asyncio.run(scenario())
