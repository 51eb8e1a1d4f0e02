"""Standard dask on the lab: a notebook that, after ``client = toppipe.connect("lab").client``,
uses only dask (``client.cluster.scale``/``adapt``, a dataframe groupby on ``dask.datasets``,
array, bag, delayed with ``.visualize()``, futures with ``as_completed``) runs on Slurm and
host workers, run by nbclient; every cell succeeds; closing the cluster object and the
notebook leaves the site's scheduler and workers running."""

from __future__ import annotations

import os
import re
import time

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.lab

NOTEBOOK = REPO / "tests" / "data" / "notebooks" / "standard_dask.ipynb"


def run_notebook(state_dir, tmp_path) -> dict[int, str]:
    """Execute the notebook in a kernel that finds the module's lab site; its cells' text by index."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    saved = os.environ.get("TOPPIPE_STATE_DIR")
    os.environ["TOPPIPE_STATE_DIR"] = str(state_dir)  # the kernel inherits it
    try:
        NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        if saved is None:
            os.environ.pop("TOPPIPE_STATE_DIR")
        else:
            os.environ["TOPPIPE_STATE_DIR"] = saved
    failed = [i for i, cell in enumerate(notebook.cells) for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not failed, f"cells {failed} failed"
    return {
        i: "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in cell.get("outputs", []))
        for i, cell in enumerate(notebook.cells)
    }


def pool(session) -> dict:
    return session.client.sync(session.client.scheduler.toppipe_pool)


def test_a_standard_dask_notebook_runs_on_slurm_and_host_workers(session, state_dir, tmp_path):
    host_workers = {w.address for w in session.workers() if w.slurm_job is None}
    assert len(host_workers) == 2
    text = "\n".join(run_notebook(state_dir, tmp_path).values())

    # the desktop reaches the scheduler on login through the site's ssh tunnel
    assert f"SiteCluster(lab, '{session.record['scheduler']}'" in text and "127.0.0.1:18786" in text
    assert "dataframe True 7 60480" in text  # 7 days of 10 s rows, one partition a day
    assert "array 32000000.0" in text
    assert "bag [('a', 150), ('b', 100), ('c', 100)]" in text
    assert "delayed 285" in text and "visualize True" in text
    assert (tmp_path / "delayed.svg").read_text().lstrip().startswith("<?xml")  # graphviz drew the graph
    assert "adapt 0 4" in text
    ran = eval(re.search(r"futures 1770 (\[.*\])", text).group(1))  # noqa: S307 - the worker names the cell printed
    slurm_names = {w.name for w in session.workers() if w.slurm_job is not None}
    host_names = {w.name for w in session.workers() if w.slurm_job is None}
    assert set(ran) & host_names and set(ran) & slurm_names, (ran, host_names, slurm_names)

    # the notebook closed its cluster object and its kernel is gone: the site runs on
    assert pool(session) == {"slurm": True, "target": pool(session)["target"], "adaptive": {"minimum": 0, "maximum": 4}, "pool": "slurm"}
    assert {w.address for w in session.workers() if w.slurm_job is None} == host_workers
    assert session.client.submit(sum, [1, 2]).result() == 3


def test_scale_and_adapt_from_the_cluster_object_reach_the_slurm_pool(session):
    cluster = session.cluster
    cluster.scale(2)
    assert pool(session) == {"slurm": True, "target": 2, "adaptive": None, "pool": "slurm"}
    cluster.wait_for_workers(4, timeout=180)  # 2 Slurm + 2 host workers
    assert "Pool: Slurm" in cluster._scaling_status()
    logs = cluster.get_logs()
    workers = set(session.client.scheduler_info(n_workers=-1)["workers"])
    assert "Scheduler" in logs and workers <= set(logs)
    adaptive = cluster.adapt(minimum=1, maximum=3)
    assert (adaptive.minimum, adaptive.maximum) == (1, 3)
    deadline = time.monotonic() + 10
    while cluster.pool.adaptive != (1, 3) and time.monotonic() < deadline:  # the repr's view, refreshed in the background
        time.sleep(0.2)
    assert "Adaptive (1 to 3)" in cluster._scaling_status()
    adaptive.stop()
    assert pool(session)["adaptive"] is None
    assert "Scheduler" in cluster.get_logs()  # also while adaptive scaling may still be retiring a worker
    cluster.scale(0)
    assert pool(session)["target"] == 0
