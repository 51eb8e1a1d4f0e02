"""Side by side, in one run on the lab: a cold ``up``, a no-op ``up`` (the fast path, and
``--full``, every action checked), ``plan`` (both ways), an ``up`` that repairs one file
edited by hand on a host, and one that repairs the note the Ansible role prepare keeps
(removed by hand: the role runs again on the host whose record lists it), against a floor
measured in the same run: starting the deploy command plus one ssh round trip to every
host, side by side, over fresh connections.

    scripts/lab up && .venv/bin/python bench/lab_up.py [--repeat 3]

Uses a throw-away state folder, runs ``up --no-check`` so the deploy alone is
timed, then ``check`` once, and takes the site down with ``--purge`` at the
end. Target (issue 19): a no-op ``up`` at most 2x the floor.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
INVENTORY = "inventories/lab"
sys.path.insert(0, str(REPO))


def timed(args: list[str], env: dict) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "deploy", *args], cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def ssh_argv(site, host, config: Path) -> list[str]:
    """OpenSSH with the inventory's settings for *host*, a fresh connection (no multiplexing)."""
    argv = ["ssh", "-F", str(config), "-o", "ControlMaster=no", "-o", "ControlPath=none", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]
    if host.ssh_key:
        argv += ["-i", host.ssh_key, "-o", "IdentitiesOnly=yes"]
    if host.known_hosts:
        argv += ["-o", f"UserKnownHostsFile={host.known_hosts}"]
    if host.port:
        argv += ["-p", str(host.port)]
    return [*argv, f"{host.user}@{host.address}" if host.user else host.address]


def floor(site, env: dict) -> float:
    """Starting the deploy command, plus one round trip to every ssh host side by side, fresh connections."""
    from deploy.inventory import jumps

    config = jumps.ssh_config(site)
    remote = [h for h in site.hosts if not h.is_local]
    start = timed(["--help"], env)
    started = time.perf_counter()
    with ThreadPoolExecutor(len(remote) or 1) as pool:
        for done in pool.map(lambda h: subprocess.run([*ssh_argv(site, h, config), "true"], capture_output=True), remote):
            done.check_returncode()
    return start + time.perf_counter() - started


def edit_by_hand(site, env: dict) -> None:
    """Append a line to a file the workers role manages on the first worker host."""
    from deploy.inventory import jumps

    host = site.group("workers")[0]
    path = f".toppipe/{site.name}/etc/dask/toppipe.yaml"
    command = f"test -f {shlex.quote(path)} && echo '# edited by hand' >> {shlex.quote(path)}"
    subprocess.run([*ssh_argv(site, host, jumps.ssh_config(site)), command], check=True, capture_output=True)


def remove_ansible_note(site) -> None:
    """Remove the note the Ansible role prepare keeps in the site's shared folder, from the first worker host."""
    from deploy.inventory import jumps

    note = f"{site.settings.paths.shared}/{site.name}/README.txt"
    command = f"rm {shlex.quote(note)}"
    subprocess.run([*ssh_argv(site, site.group("workers")[0], jumps.ssh_config(site)), command], check=True, capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as state:
        env = {**os.environ, "TOPPIPE_STATE_DIR": state}
        os.environ["TOPPIPE_STATE_DIR"] = state
        from deploy.inventory import load_site

        site = load_site(INVENTORY)
        subprocess.run([sys.executable, "-m", "deploy", "down", INVENTORY, "--purge"], cwd=REPO, env=env, stdout=subprocess.DEVNULL)
        try:
            print("cold up ...", file=sys.stderr, flush=True)
            cold = timed(["up", INVENTORY, "--no-check"], env)
            rows: dict[str, list[float]] = {}
            for _ in range(args.repeat):
                rows.setdefault("floor", []).append(floor(site, env))
                rows.setdefault("no-op up", []).append(timed(["up", INVENTORY, "--no-check"], env))
                rows.setdefault("no-op up --full", []).append(timed(["up", INVENTORY, "--no-check", "--full"], env))
                rows.setdefault("plan", []).append(timed(["plan", INVENTORY], env))
                rows.setdefault("plan --full", []).append(timed(["plan", INVENTORY, "--full"], env))
                edit_by_hand(site, env)
                rows.setdefault("up repairing one file", []).append(timed(["up", INVENTORY, "--no-check"], env))
                remove_ansible_note(site)
                rows.setdefault("up repairing role's file", []).append(timed(["up", INVENTORY, "--no-check"], env))
            check = timed(["check", INVENTORY], env)
        finally:
            subprocess.run([sys.executable, "-m", "deploy", "down", INVENTORY, "--purge"], cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    base = statistics.median(rows["floor"])
    print(f"{'measure (median)':<26}{'seconds':>9}{'x floor':>9}  verdict")
    print(f"{'cold up':<26}{cold:>9.2f}{cold / base:>9.2f}")
    for name, values in rows.items():
        value = statistics.median(values)
        verdict = ("ok" if value <= 2 * base else "SLOW") + " (target <= 2x floor)" if name == "no-op up" else ""
        print(f"{name:<26}{value:>9.2f}{value / base:>9.2f}  {verdict}")
    print(f"{'check':<26}{check:>9.2f}{check / base:>9.2f}")
    print(f"(floor: python -m deploy --help plus one ssh round trip to each of {len([h for h in site.hosts if not h.is_local])} hosts side by side, fresh connections; {args.repeat} repeats)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
