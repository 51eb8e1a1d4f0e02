"""A small package as an install leaves it (its folder and ``*.dist-info``), for the tests of
pipelines loaded from an installed module: pipeline -> helpers -> deep, a chain of calls."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

PIPELINE = """
    from toppipe.pipeline import task
    from {name} import helpers

    @task
    def numbers(n=3):
        return list(range(n))

    @task
    def doubled(numbers):
        return [helpers.f(x) for x in numbers]

    @task
    def lowered(numbers):
        return [helpers.other(x) for x in numbers]

    @task
    def total(doubled, lowered):
        return sum(doubled) + sum(lowered)
    """
HELPERS = """
    from {name}.deep import g

    def f(x):
        return g(x) * 2

    def other(x):
        return x - 1
    """
DEEP = "def g(x):\n    return x + 1\n"
TASKS = ["numbers", "doubled", "lowered", "total"]


def write_package(folder: Path, name: str) -> Path:
    """Package *name* in *folder*; its folder."""
    package = folder / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "pipeline.py").write_text(textwrap.dedent(PIPELINE.format(name=name)))
    (package / "helpers.py").write_text(textwrap.dedent(HELPERS.format(name=name)))
    (package / "deep.py").write_text(DEEP)
    return package


def write_dist_info(folder: Path, name: str, version: str) -> None:
    """The ``*.dist-info`` an install of *name* at *version* leaves in *folder* (its RECORD names
    the package's files); called again, an upgrade."""
    for old in folder.glob(f"{name}-*.dist-info"):
        shutil.rmtree(old)
    info = folder / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    files = [f"{name}/{p.name},," for p in sorted((folder / name).glob("*.py"))]
    (info / "RECORD").write_text("\n".join([*files, f"{info.name}/METADATA,,", f"{info.name}/RECORD,,"]) + "\n")
