"""Side by side, in one run: no-op ``up`` and ``toppipe.connect`` on the closed lab through the
client's tunnel (``reach: tunnel``, the lab's default) against the same reached directly
(``reach: direct``, a copy of the inventory) on the lab opened for the comparison
(``scripts/lab open``; closed again at the end when it was closed).

    scripts/lab up && .venv/bin/python bench/tunnel.py [--repeat 5]

Uses a throw-away state folder, runs ``up --no-check`` so that the deploy alone is timed, and
takes the site down with ``--purge`` at the end. Targets (issue 14): the tunnel adds at most 10%
to a no-op ``up`` and at most 100 ms to ``connect``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.inventory_copies import copy_inventory  # noqa: E402


def deploy(args: list[str], env: dict) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "deploy", *args], cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def connect_seconds(repeat: int) -> list[float]:
    import toppipe

    found = []
    for _ in range(repeat):
        started = time.perf_counter()
        toppipe.connect("lab").close()
        found.append(time.perf_counter() - started)
    return found


def direct_inventory(folder: Path) -> Path:
    """``inventories/lab`` with ``reach: direct``."""
    copy = copy_inventory("lab", folder / "lab-direct")
    file = copy / "group_vars" / "all.yml"
    settings = yaml.safe_load(file.read_text())
    settings["toppipe"]["reach"] = "direct"
    file.write_text(yaml.safe_dump(settings, sort_keys=False))
    return copy


def lab_status() -> dict:
    """The running lab's lab.json (its ``access``: closed or open)."""
    state = Path(os.environ.get("TOPPIPE_LAB_STATE", "/var/lib/toppipe-lab"))
    return json.loads((state / "lab.json").read_text())


def lab_access(mode: str) -> None:
    """``scripts/lab open`` or ``close`` on the running lab."""
    subprocess.run([str(REPO / "scripts" / "lab"), mode], check=True, stdout=subprocess.DEVNULL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    was_closed = lab_status().get("access") == "closed"
    with tempfile.TemporaryDirectory() as state, tempfile.TemporaryDirectory() as copies:
        env = {**os.environ, "TOPPIPE_STATE_DIR": state}
        os.environ["TOPPIPE_STATE_DIR"] = state
        kinds = {"tunnel": "inventories/lab", "direct": str(direct_inventory(Path(copies)))}
        up, connect = {}, {}
        try:
            print("first up ...", file=sys.stderr, flush=True)
            deploy(["up", kinds["tunnel"], "--no-check"], env)
            for kind, inventory in kinds.items():
                if kind == "direct":
                    lab_access("open")
                deploy(["up", inventory, "--no-check"], env)  # its record; the tunnel runs on in direct too
                up[kind] = [deploy(["up", inventory, "--no-check"], env) for _ in range(args.repeat)]
                connect[kind] = connect_seconds(args.repeat)
        finally:
            subprocess.run([sys.executable, "-m", "deploy", "down", "inventories/lab", "--purge"], cwd=REPO, env=env, stdout=subprocess.DEVNULL)
            if was_closed:
                lab_access("close")
    up_t, up_d = statistics.median(up["tunnel"]), statistics.median(up["direct"])
    co_t, co_d = statistics.median(connect["tunnel"]), statistics.median(connect["direct"])
    print(f"{'measure (median)':<20}{'tunnel':>9}{'direct':>9}{'ratio':>8}  verdict")
    print(f"{'no-op up (s)':<20}{up_t:>9.2f}{up_d:>9.2f}{up_t / up_d:>8.2f}  {'ok' if up_t <= 1.1 * up_d else 'SLOW'} (target <= 1.10)")
    extra = (co_t - co_d) * 1000
    print(f"{'connect (s)':<20}{co_t:>9.3f}{co_d:>9.3f}{co_t / co_d:>8.2f}  {'ok' if extra <= 100 else 'SLOW'} "
          f"(+{extra:.0f} ms; target <= +100 ms)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
