"""Side by side, in one run on the lab: a cold ``up`` with the site's images
already in the client's cache, against a cold ``up`` that builds them first.

    scripts/lab up && .venv/bin/python bench/lab_images.py

Both start from nothing on the hosts (``down --purge`` also empties the
site's folder on the shared filesystem, so images are sent again); the
fresh build uses an empty cache folder (``XDG_CACHE_HOME``), so every image
is built: base by debootstrap, the others on top of it. Runs ``up
--no-check`` so the deploy alone is timed; takes the site down at the end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
INVENTORY = "inventories/lab"


def deploy(*args: str, env: dict, quiet: bool = True) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "deploy", *args], cwd=REPO, env=env, check=True,
                   stdout=subprocess.DEVNULL if quiet else None)  # fmt: skip
    return time.perf_counter() - started


def cold_up(env: dict) -> float:
    deploy("down", INVENTORY, "--purge", env=env)
    return deploy("up", INVENTORY, "--no-check", env=env)


def main() -> int:
    with tempfile.TemporaryDirectory() as state, tempfile.TemporaryDirectory() as empty_cache:
        env = {**os.environ, "TOPPIPE_STATE_DIR": state}
        try:
            deploy("build", INVENTORY, env=env)  # the cached case needs every image in the cache
            print("cold up, images cached ...", file=sys.stderr, flush=True)
            cached = cold_up(env)
            print("cold up, images built first (several minutes) ...", file=sys.stderr, flush=True)
            fresh = cold_up({**env, "XDG_CACHE_HOME": empty_cache})
        finally:
            deploy("down", INVENTORY, "--purge", env=env)
    print(f"{'measure':<32}{'seconds':>9}{'ratio':>8}")
    print(f"{'cold up, images cached':<32}{cached:>9.1f}{1:>8.2f}")
    print(f"{'cold up, fresh image build':<32}{fresh:>9.1f}{fresh / cached:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
