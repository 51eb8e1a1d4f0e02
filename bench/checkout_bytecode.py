"""Side by side, in one run: what the checkout's compiled bytecode saves each process of a site.

    .venv/bin/python bench/checkout_bytecode.py [--repeat 7]

toppipe, deploy and roles run from the checkout, not from site-packages, so pip never compiles
them; ``scripts/setup`` does. Where ``PYTHONDONTWRITEBYTECODE`` is set (many CI machines and
containers), or the checkout is read-only to the site's services, Python otherwise compiles them
again in every process. Two copies of the three packages, one compiled and one not, are imported
in turn by the entry points of the processes ``up`` starts: the deploy command, the agent, the
dashboard. Prints the median wall and CPU seconds of each, and the ratio.
"""

from __future__ import annotations

import argparse
import compileall
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("deploy", "roles", "toppipe")
ENTRY_POINTS = {
    "deploy command": "import deploy.__main__, deploy.lifecycle, deploy.engine.pyinfra_engine, roles",
    "site agent": "import toppipe.agent",
    "site dashboard": "import toppipe.dashboard.__main__, toppipe.dashboard.app",
}


def copy_checkout(into: Path, compiled: bool) -> Path:
    """The three packages copied into *into*, without bytecode, then compiled when *compiled*."""
    for name in PACKAGES:
        shutil.copytree(REPO / name, into / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    if compiled:
        for name in PACKAGES:
            compileall.compile_dir(into / name, quiet=1)
    return into


def timed_import(code: str, path: Path) -> tuple[float, float]:
    """Wall and CPU seconds of a fresh interpreter running *code* with *path* first on sys.path."""
    env = os.environ | {"PYTHONPATH": str(path), "PYTHONDONTWRITEBYTECODE": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=path, env=env, check=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as plain, tempfile.TemporaryDirectory() as compiled:
        copies = {"source only": copy_checkout(Path(plain), False), "compiled": copy_checkout(Path(compiled), True)}
        found: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for _ in range(args.repeat):  # alternating, so that both see the same noise
            for label, code in ENTRY_POINTS.items():
                for kind, path in copies.items():
                    found.setdefault((label, kind), []).append(timed_import(code, path))
    print(f"{'process':<16}{'source only':>22}{'compiled':>22}{'ratio':>8}")
    for label in ENTRY_POINTS:
        cells, walls = [], []
        for kind in copies:
            wall = statistics.median(w for w, _ in found[label, kind])
            cpu = statistics.median(c for _, c in found[label, kind])
            cells.append(f"{wall:.2f} s ({cpu:.2f} CPU)")
            walls.append(wall)
        print(f"{label:<16}{cells[0]:>22}{cells[1]:>22}{walls[1] / walls[0]:>8.2f}")
    print(f"(imports of each process's entry point, in a fresh interpreter; median of {args.repeat}, alternating)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
