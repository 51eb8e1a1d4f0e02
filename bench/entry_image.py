"""Side by side, in one run: toppipe from the client image against toppipe from .venv,
both through scripts/toppipe (TOPPIPE_ENV=image or venv), on the same local site.

    .venv/bin/python bench/entry_image.py [--repeat 5]

Measures a no-op ``up`` (what a user runs most) and a notebook's ``import toppipe`` +
``connect`` + one task (``scripts/toppipe python``, the kernel's environment), the two
environments alternating round by round so that the machine's drift hits both alike.
Needs the client image (``scripts/toppipe build inventories/lab`` builds it); unpacks it
once if it was not. Uses a throw-away state folder and takes the site down at the end.
Target (issue 20): the image at most 1.2x .venv for each.
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
ENTRY = str(REPO / "scripts" / "toppipe")
CONNECT = "import toppipe; s = toppipe.connect('local'); assert s.client.submit(sum, [1, 2]).result() == 3; s.close()"
TARGET = 1.2


def timed(argv: list[str], env: dict) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    measures = {"no-op up": [ENTRY, "up", "inventories/local"], "import + connect + a task": [ENTRY, "python", "-c", CONNECT]}
    times: dict[tuple[str, str], list[float]] = {(m, e): [] for m in measures for e in ("venv", "image")}
    with tempfile.TemporaryDirectory() as state:
        env = {**os.environ, "TOPPIPE_STATE_DIR": state}
        env.pop("TOPPIPE_SERVICE", None)
        try:
            print("first up, and a warm-up of each environment ...", file=sys.stderr, flush=True)
            timed([ENTRY, "up", "inventories/local", "--no-check"], {**env, "TOPPIPE_ENV": "venv"})
            for environment in ("venv", "image"):
                timed(measures["no-op up"], {**env, "TOPPIPE_ENV": environment})
            for _ in range(args.repeat):
                for measure, argv in measures.items():
                    for environment in ("venv", "image"):
                        times[measure, environment].append(timed(argv, {**env, "TOPPIPE_ENV": environment}))
        finally:
            subprocess.run([ENTRY, "down", "inventories/local", "--purge"], cwd=REPO, env={**env, "TOPPIPE_ENV": "venv"}, stdout=subprocess.DEVNULL)
    print(f"{'measure':<28}{'.venv':>8}{'image':>8}{'ratio':>8}{'target':>8}  verdict")
    for measure in measures:
        venv, image = statistics.median(times[measure, "venv"]), statistics.median(times[measure, "image"])
        ratio = image / venv
        print(f"{measure:<28}{venv:>8.3f}{image:>8.3f}{ratio:>8.2f}{f'<={TARGET}':>8}  {'ok' if ratio <= TARGET else 'SLOW'}")
    print(f"(seconds, median of {args.repeat} alternating rounds; ratio: image / .venv)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
