"""A pipeline whose map leaves a mark per computation of each element (a file per element, one
character per computation, in the folder it is given): tests count them to prove that no
element was computed twice, whatever happened to the workers meanwhile."""

from __future__ import annotations

from pathlib import Path

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
