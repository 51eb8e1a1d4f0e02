"""Side by side, in one run: the local site's first ``up`` against the slowest of its services'
own start times, and its ``down`` against their own stop times (issue 19: services started side by side, stopped together).

    .venv/bin/python bench/local_start_stop.py [--repeat 3]

Each round, in a throw-away state folder: ``up`` from nothing (timed as the user runs it, with
its checks, and the same without them: ``--no-check``), then each service stopped and started
again alone (both timed) with the very script ``up`` runs for it (its own start time, the others running),
then ``down`` (timed). Medians over the rounds. Targets: first up at most 1.3x the slowest own
start; down at most 2 s (shown against the slowest service's own stop).

Also the CPU the first ``up`` used: the deploy command and its children, plus every process of
the site's services when ``up`` returns, over the machine's cores. No ``up`` that starts all of
them can take less, whatever the slowest own start. Where that floor alone is over 1.3x the
slowest own start (two cores: the services' CPU is about 2.7 times JupyterLab's), no ``up`` can
meet the target on the machine, and the verdict is against the larger floor.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
INVENTORY = "inventories/local"
#: The first up against the slowest service's own start (issue 19), or against the CPU floor where that is larger.
TARGET = 1.3

#: Prints "stop <service> <seconds>" and "start <service> <seconds>" per service: stopped, then
#: started alone, each by the script its runtime gives up and down for it.
OWN_STARTS = """
import subprocess, sys, time
from deploy import lifecycle
from deploy.engine import get_engine
from deploy.inventory import load_site
from deploy.runtime import runtime_for
from deploy.state import site_files

site = load_site(sys.argv[1])
with get_engine() as engine:
    specs = lifecycle.services(site, lifecycle.contexts(engine, site, site_files(site)))
for host, spec in specs:
    runtime = runtime_for(site.host(host), spec)
    for step, script in (("stop", runtime.stop_command(spec)), ("start", runtime.start_command(spec))):
        started = time.perf_counter()
        subprocess.run(["bash", "-c", script], check=True, stdout=subprocess.DEVNULL)
        print(step, spec.name, time.perf_counter() - started, flush=True)
"""


def service_cpu_seconds(site: str) -> float:
    """CPU seconds used so far by every process of *site*'s services (and their ended children)."""
    marker, tick, total = f"TOPPIPE_SERVICE={site}/".encode(), os.sysconf("SC_CLK_TCK"), 0.0
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if not any(entry.startswith(marker) for entry in environ.read_bytes().split(b"\0")):
                continue
            fields = (environ.parent / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(value) for value in fields[11:15]) / tick  # utime stime cutime cstime
    return total


def cpu_timed(argv: list[str], env: dict) -> tuple[float, float]:
    """Seconds *argv* took, and the CPU seconds it and the site's services used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds = timed(argv, env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, own + service_cpu_seconds("local")


def timed(argv: list[str], env: dict) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - started


def one_round(env: dict) -> dict[str, float]:
    deploy = [sys.executable, "-m", "deploy"]
    found: dict[str, float] = {}
    try:
        found["first up"], found["cpu of first up"] = cpu_timed([*deploy, "up", INVENTORY], env)
        timed([*deploy, "down", INVENTORY, "--purge"], env)
        found["first up --no-check"] = timed([*deploy, "up", INVENTORY, "--no-check"], env)
        own = subprocess.run([sys.executable, "-c", OWN_STARTS, INVENTORY], cwd=REPO, env=env, check=True, capture_output=True, text=True)
        for line in own.stdout.split("\n"):
            if line.strip():
                step, name, seconds = line.split()
                found[f"own {step}: {name}"] = float(seconds)
        found["down"] = timed([*deploy, "down", INVENTORY], env)
    finally:
        subprocess.run([*deploy, "down", INVENTORY, "--purge"], cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rounds = []
    for index in range(args.repeat):
        print(f"round {index + 1} of {args.repeat} ...", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory() as state:
            env = {k: v for k, v in os.environ.items() if k != "TOPPIPE_SERVICE"} | {"TOPPIPE_STATE_DIR": state}
            rounds.append(one_round(env))
    median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    slowest = max(value for key, value in median.items() if key.startswith("own start"))
    print(f"{'measure':<30}{'seconds':>9}{'ratio':>8}{'target':>9}  verdict")
    for key, value in median.items():
        if key.startswith("own "):
            print(f"{key:<30}{value:>9.3f}{'-':>8}{'-':>9}")
    cores = os.cpu_count() or 1
    cpu_floor = median["cpu of first up"] / cores
    print(f"{f'cpu of first up / {cores} cores':<30}{cpu_floor:>9.3f}{'-':>8}{'-':>9}  ({median['cpu of first up']:.2f} CPU seconds)")
    # the target is 1.3x the slowest own start; where the CPU floor alone exceeds that, no up can
    # meet it on this machine, and the floor that binds is the CPU's
    infeasible = cpu_floor > TARGET * slowest
    for key in ("first up", "first up --no-check"):
        ratio = median[key] / slowest
        verdict = "ok" if ratio <= TARGET else f"over (the cpu floor alone is {cpu_floor / slowest:.2f}x)" if infeasible else "SLOW"
        print(f"{key:<30}{median[key]:>9.3f}{ratio:>8.2f}{f'<={TARGET}':>9}  {verdict}")
    floor = max(slowest, cpu_floor)
    ratio = median["first up"] / floor
    print(f"{'first up, against both floors':<30}{median['first up']:>9.3f}{ratio:>8.2f}{f'<={TARGET}':>9}  "
          f"{'ok' if ratio <= TARGET else 'SLOW'} (the larger: {'cpu' if cpu_floor > slowest else 'slowest own start'})")
    slowest_stop = max(value for key, value in median.items() if key.startswith("own stop"))
    print(f"{'down':<30}{median['down']:>9.3f}{median['down'] / slowest_stop:>8.2f}{'<=2 s':>9}  {'ok' if median['down'] <= 2 else 'SLOW'}")
    print(f"(ratio: up against the slowest own start, down against the slowest own stop; {args.repeat} rounds, median)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
