"""A pipeline whose map leaves a mark per computation of each element (a file per element, one
character per computation, in the folder it is given): tests count them to prove that no
element was computed twice, whatever happened to the workers meanwhile."""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import SimpleNamespace

PIPELINE = """
import os, time
from toppipe.pipeline import task

@task
def items(n=10, folder=""):
    return [(i, folder) for i in range(n)]

@task(map="items")
def slow_cube(items):
    i, folder = items
    time.sleep(3)
    with open(os.path.join(folder, str(i)), "a") as marks:  # one mark per computation of element i
        marks.write("x")
    return i ** 3

@task
def total(slow_cube):
    return sum(slow_cube)
"""


def write(folder: Path) -> Path:
    """The pipeline's file in *folder*."""
    path = folder / "marked_map.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(PIPELINE)
    return path


def cluster(n_workers: int):
    """A real dask cluster of worker processes with one thread each, like the lab's Slurm workers."""
    import distributed

    return distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, resources={"host": 1},
                                    dashboard_address=None, worker_dashboard_address=None)  # fmt: skip


def session(client, folder: Path) -> SimpleNamespace:
    """What ``pipeline.launch.start`` and ``Run`` need of a session, on *client*: one pool, ``hosts``."""
    return SimpleNamespace(record={"results": str(folder / "results")}, client=client, site="here",
                           guard_scheduler=lambda *_: contextlib.nullcontext(),
                           _call=lambda name: [{"name": "hosts", "offer": {"host": 1}}])  # fmt: skip
