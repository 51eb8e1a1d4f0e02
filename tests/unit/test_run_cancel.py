"""Cancelling a run cancels its map's elements too (toppipe.run_cancel), on a real dask cluster of
worker processes: the elements a group task submitted from its worker, fire-and-forget, and
those it submits after the run was cancelled."""

from __future__ import annotations

import time

import distributed

from tests import marked_map
from tests.conftest import until
from toppipe.pipeline.launch import start
from toppipe.pipeline.loader import load
from toppipe.run_cancel import RunCanceller, belongs

SIZE = 12


def _install(dask_scheduler):
    dask_scheduler.add_plugin(RunCanceller(dask_scheduler))


def _keys_of(dask_scheduler, run):
    return [key for key in dask_scheduler.tasks if belongs(key, run)]


def _computing(dask_worker):
    return len(dask_worker.state.executing)


def test_cancelling_a_run_cancels_the_elements_its_map_sent(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    pipeline = load(marked_map.write(tmp_path))
    with marked_map.cluster(2) as cluster:
        with distributed.Client(cluster) as client:
            client.run_on_scheduler(_install)
            session = marked_map.session(client, tmp_path)
            run = start(session, pipeline, on="hosts", params={"n": SIZE, "folder": str(marks)})
            assert until(lambda: any(marks.iterdir()), 60)  # elements are computing
            run.cancel()
            assert until(lambda: not client.run_on_scheduler(_keys_of, run=run.id), 10), client.run_on_scheduler(_keys_of, run=run.id)
            assert until(lambda: not any(client.run(_computing).values()), 10)  # what computed at the cancel ended
    marked = len(list(marks.iterdir()))
    assert marked <= 4, f"{marked} of {SIZE} elements computed after the run was cancelled"


def test_elements_submitted_after_the_cancel_are_cancelled(tmp_path):
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None, worker_dashboard_address=None) as cluster:  # fmt: skip
        with distributed.Client(cluster) as client:
            client.run_on_scheduler(_install)
            client.log_event("toppipe-run", {"run": "20261202T000000-abc123", "state": "cancelled", "time": time.time()})
            late = client.submit(time.sleep, 5, key="slow_cube-20261202T000000-abc123-1-e0")
            other = client.submit(sum, [1, 2], key="slow_cube-20261202T000000-def456-1-e0")
            assert other.result(timeout=30) == 3
            assert until(lambda: late.status == "cancelled", 10), late.status
