"""Side by side, in one run: the first ``up`` of the local site against a no-op
second ``up`` (the fast path, and ``--full``, every action checked, against
starting the deploy command), and ``import toppipe`` + ``connect`` against bare
``import distributed`` (the floor any dask client pays).

    .venv/bin/python bench/local_up.py [--repeat 5]

Uses a throw-away state folder and takes the site down at the end.
Targets (issue 2): no-op up < 2 s; import + connect < 0.6 s.
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
CONNECT = "import time; t = time.perf_counter(); import toppipe; s = toppipe.connect('local'); print(time.perf_counter() - t); s.close()"
IMPORT_ONLY = "import time; t = time.perf_counter(); import distributed; print(time.perf_counter() - t)"


def timed(argv: list[str], env: dict) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - started


def inner(code: str, env: dict) -> float:
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as state:
        env = {**os.environ, "TOPPIPE_STATE_DIR": state}
        deploy = [sys.executable, "-m", "deploy"]
        try:
            print("first up (cold) ...", file=sys.stderr, flush=True)
            first = timed([*deploy, "up", "inventories/local"], env)
            noop = [timed([*deploy, "up", "inventories/local"], env) for _ in range(args.repeat)]
            noop_bare = [timed([*deploy, "up", "inventories/local", "--no-check"], env) for _ in range(args.repeat)]
            noop_full = [timed([*deploy, "up", "inventories/local", "--no-check", "--full"], env) for _ in range(args.repeat)]
            start = [timed([*deploy, "--help"], env) for _ in range(args.repeat)]
            connect = [inner(CONNECT, env) for _ in range(args.repeat)]
            floor = [inner(IMPORT_ONLY, env) for _ in range(args.repeat)]
        finally:
            subprocess.run([*deploy, "down", "inventories/local", "--purge"], cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    rows = [
        ("first up (cold)", first, None, None),
        ("no-op up (median)", statistics.median(noop), first, 2.0),
        ("deploy --help (floor)", statistics.median(start), None, None),
        ("no-op up --no-check", statistics.median(noop_bare), statistics.median(start), None),
        ("  the same, --full", statistics.median(noop_full), statistics.median(start), None),
        ("import distributed", statistics.median(floor), None, None),
        ("import toppipe + connect", statistics.median(connect), statistics.median(floor), 0.6),
    ]
    print(f"{'measure':<26}{'seconds':>9}{'ratio':>8}{'target':>9}  verdict")
    for name, value, base, target in rows:
        ratio = f"{value / base:.2f}" if base else "-"
        verdict = ("ok" if value < target else "SLOW") if target else ""
        print(f"{name:<26}{value:>9.3f}{ratio:>8}{(f'<{target}' if target else '-'):>9}  {verdict}")
    print(f"(ratio: against the first up, deploy --help or import distributed; {args.repeat} repeats, median)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
