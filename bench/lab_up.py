"""Side by side, in one run on the lab: a cold ``up`` (fresh hosts' Python
environments) against a no-op ``up`` of the same site.

    scripts/lab up && .venv/bin/python bench/lab_up.py [--repeat 3]

Uses a throw-away state folder, runs ``up --no-check`` so the deploy alone is
timed, then ``check`` once, and takes the site down with ``--purge`` at the
end. Target (issue 3): a no-op ``up`` of the whole lab under 5 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def timed(args: list[str], env: dict) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "deploy", *args], cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as state:
        env = {**os.environ, "TOPPIPE_STATE_DIR": state}
        subprocess.run([sys.executable, "-m", "deploy", "down", "inventories/lab", "--purge"], cwd=REPO, env=env, stdout=subprocess.DEVNULL)
        try:
            print("cold up ...", file=sys.stderr, flush=True)
            cold = timed(["up", "inventories/lab", "--no-check"], env)
            noop = [timed(["up", "inventories/lab", "--no-check"], env) for _ in range(args.repeat)]
            check = timed(["check", "inventories/lab"], env)
        finally:
            subprocess.run([sys.executable, "-m", "deploy", "down", "inventories/lab", "--purge"], cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    median = statistics.median(noop)
    print(f"{'measure':<24}{'seconds':>9}{'ratio':>8}  verdict")
    print(f"{'cold up':<24}{cold:>9.2f}{'-':>8}")
    print(f"{'no-op up (median)':<24}{median:>9.2f}{median / cold:>8.2f}  {'ok' if median < 5 else 'SLOW'} (target < 5 s)")
    print(f"{'check':<24}{check:>9.2f}{'-':>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
