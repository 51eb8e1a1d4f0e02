"""Side by side, alternating, in one run on the lab: the time from a task submitted to an EMPTY
Slurm pool to that task running, with toppipe's adaptive pool (``session.adapt(0, 1, pool="slurm")``,
the site agent starts a job) against plain dask-jobqueue ``SLURMCluster.adapt`` on the same
partition, run on the same login node in the same scheduler image, with the same binds and the
same worker Python as the agent's jobs.

    scripts/lab up && .venv/bin/python bench/pool_adapt.py [--rounds 3]

Uses a throw-away state folder, runs ``up --no-check``, and takes the site down with
``--purge`` at the end. Each round starts with no Slurm job of the lab user in the queue and
waits until the pool (or the plain cluster) is back at zero. The task returns ``time.time()`` at
its start (and when its worker's process started); the lab's hosts share this machine's clock.
The split tells where the time goes: to the worker's process (the adaptive loop noticing the
task, sbatch, Slurm starting the job, the container starting), then to the task (Python
starting, the worker joining, the task sent to it); Linux dates a process from the boot time in
whole seconds, so the split may be off by up to a second, the same on both sides. The plain
cluster speaks TLS with the site's certificates, as the worker Python's dask config requires.
Target (issue 17): toppipe's median at most 1.10 times the plain cluster's; with few rounds the
medians are noisy (Slurm and container start vary by a second), so ``--rounds 8`` for a verdict.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.lab.conftest import Lab, load_lab  # noqa: E402

INVENTORY = "inventories/lab"
POOL = "slurm"
#: The plain cluster's Slurm jobs (not the agent's name, so neither sees the other's jobs).
RAW_JOB_NAME = "toppipe-bench-raw"
#: The plain cluster's processes carry this marker instead of the agent's (``down`` sweeps ``<site>/*``).
RAW_MARKER = "bench-pool-adapt"

#: The plain cluster's script begins with this: ``plain_cluster(cfg)`` is a SLURMCluster on the
#: agent's partition, speaking TLS with the site's certificates (DASK_CONFIG) as its workers require.
RAW_PREAMBLE = r'''
import asyncio, json, os, sys, time
from dask_jobqueue import SLURMCluster
from distributed import Client
from distributed.security import Security

def plain_cluster(cfg):
    return SLURMCluster(
        asynchronous=True, security=Security(), protocol="tls://",
        scheduler_options={"host": cfg["host"], "port": 0, "dashboard_address": "127.0.0.1:0"},
        queue=cfg["partition"], cores=cfg["cores"], memory=cfg["memory"], walltime=cfg["walltime"], processes=1,
        python=cfg["python"], job_name=cfg["job_name"], log_directory=cfg["folder"] + "/logs",
        local_directory=cfg["folder"] + "/work", job_extra_directives=["--chdir=" + cfg["folder"]],
        worker_extra_args=["--no-dashboard"],
    )
'''

#: Run on login inside the scheduler image: a plain SLURMCluster adapting between 0 and 1 job.
#: One round per line read on stdin ("go"); one JSON line per round; stops at end of input.
RAW_SCRIPT = RAW_PREAMBLE + r'''
def started():
    import os, time, psutil
    return time.time(), os.environ.get("SLURM_JOB_ID"), psutil.Process().create_time()

async def main(cfg):
    async with plain_cluster(cfg) as cluster:
        cluster.adapt(minimum=0, maximum=1, interval="1s")
        async with Client(cluster, asynchronous=True, security=Security()) as client:
            print(json.dumps({"ready": True}), flush=True)
            loop = asyncio.get_running_loop()
            while (await loop.run_in_executor(None, sys.stdin.readline)).strip() == "go":
                submitted = time.time()
                start, job, process = await client.submit(started, pure=False)
                print(json.dumps({"submitted": submitted, "started": start, "job": job, "process": process}), flush=True)
                while cluster.workers or cluster.scheduler.workers:  # back to zero: its job ended
                    await asyncio.sleep(0.2)

asyncio.run(main(json.loads(sys.argv[1])))
'''


def started() -> tuple[float, str | None, float]:
    """The task: when it started, in which Slurm job, and when its worker's process started."""
    import os
    import time

    import psutil

    return time.time(), os.environ.get("SLURM_JOB_ID"), psutil.Process().create_time()


def deploy(args: list[str], env: dict) -> None:
    """``python -m deploy ARGS``; its own one-line error ends the bench."""
    if subprocess.run([sys.executable, "-m", "deploy", *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL).returncode:
        raise SystemExit(f"bench: deploy {args[0]} failed (its error above)")


def wait(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout:.0f} s")
        time.sleep(interval)
    return found


def leftover_processes(lab: Lab, site: str) -> list[str]:
    """Processes of the plain cluster still on login (they carry its marker)."""
    marker = shlex.quote(f"TOPPIPE_SERVICE={site}/{RAW_MARKER}")
    found = lab.ssh("login", f"grep -lzxF {marker} /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3", check=False).stdout.split()
    return [f"process {pid}" for pid in found]


def squeue(lab: Lab) -> list[str]:
    """The lab user's Slurm jobs (id name state)."""
    return lab.ssh("login", "squeue -h --me -o '%i %j %T'").stdout.split("\n")[:-1]


def measured(submitted: float, start: float, job: str | None, process: float) -> dict:
    """A round: submit to start, split at the start of the worker's process (job submitted and
    scheduled, container started) and from there to the task (Python, joining, the task sent)."""
    return {"seconds": start - submitted, "job": job, "to_process": process - submitted, "to_task": start - process}


class RawCluster:
    """The plain dask-jobqueue cluster on login, driven one round at a time over ssh: *script* (its
    configuration as JSON in argv[1], with *extra*) prints a JSON line when ready, then one per round."""

    def __init__(self, lab: Lab, site_root: str, script: str = RAW_SCRIPT, **extra):
        self.lab = lab
        agent = yaml.safe_load(lab.ssh("login", f"cat {site_root}/etc/agent.yaml").stdout)
        launcher = lab.ssh("login", f"cat {site_root}/services/scheduler/good/start.sh").stdout
        pool = next(p for p in agent["pools"] if p["name"] == POOL)
        folder = f"{agent['slurm']['workdir']}/bench-raw"
        config = {"host": agent["host"], "partition": pool["partition"], "cores": pool["cores"], "memory": pool["memory"],
                  "walltime": pool["walltime"], "python": agent["slurm"]["python"], "job_name": RAW_JOB_NAME, "folder": folder, **extra}  # fmt: skip
        container = agent_container(launcher).replace(f"TOPPIPE_SERVICE={agent['site']}/scheduler", f"TOPPIPE_SERVICE={agent['site']}/{RAW_MARKER}")
        command = (f"mkdir -p {shlex.quote(folder)}/logs {shlex.quote(folder)}/work && "
                   f"exec {container} -c {shlex.quote(script)} {shlex.quote(json.dumps(config))}")  # fmt: skip
        argv = [a for a in lab.ssh_argv("login") if a != "-n"] + ["--", command]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.read()  # ready

    def read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the plain dask-jobqueue cluster on login exited ({self.proc.wait()})")
        return json.loads(line)

    def round(self) -> dict:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        found = self.read()
        return measured(found["submitted"], found["started"], found["job"], found["process"])

    def close(self, timeout: float = 120) -> None:
        try:
            self.proc.stdin.close()  # end of input: the script ends its cluster (scancel) and exits
            self.proc.wait(timeout)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def agent_container(launcher: str) -> str:
    """``apptainer exec`` of the agent's Python with the image, environment and binds of the
    agent's instance, from the agent's launcher script."""
    image = re.search(r"^image=(.+)$", launcher, re.M)
    options = re.search(r'instance start (.+?) "\$image" "\$inst"', launcher)
    python = re.search(r'instance://"\$inst" (\S+) -m toppipe\.agent ', launcher)
    if not image or not options or not python:
        raise RuntimeError("the agent's launcher on login has no apptainer instance (is the lab's runtime apptainer?)")
    return f'"$(command -v apptainer || command -v singularity)" -s exec {options.group(1)} {image.group(1)} {python.group(1)}'


def toppipe_round(session) -> dict:
    """A task for the empty pool: submit to start; then the pool goes back to zero."""
    submitted = time.time()
    found = measured(submitted, *session.client.submit(started, resources={f"pool:{POOL}": 1}, pure=False).result(timeout=600))
    wait(lambda: pool_empty(session), 300, f"pool {POOL} back to zero")
    return found


def pool_empty(session) -> bool:
    pool = next(p for p in session.pools() if p.name == POOL)
    return pool.workers == 0 and pool.pending_jobs == 0


def median(rounds: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rounds)


def report(rounds: dict[str, list[dict]]) -> None:
    """The table of medians, and the ratio with its verdict."""
    print(f"{'submit to start (median s)':<28}{'total':>7}{'to worker process':>19}{'process to task':>17}")
    for side, found in rounds.items():
        print(f"{side:<28}{median(found, 'seconds'):>7.2f}{median(found, 'to_process'):>19.2f}{median(found, 'to_task'):>17.2f}")
    ratio = median(rounds["toppipe"], "seconds") / median(rounds["dask-jobqueue"], "seconds")
    count = len(rounds["toppipe"])
    print(f"ratio toppipe/dask-jobqueue {ratio:.2f}  {'ok' if ratio <= 1.10 else 'SLOW'} (target <= 1.10; {count} rounds)")


def side_by_side(lab: Lab, site, count: int, setup) -> tuple[dict[str, list], list[str]]:
    """*count* rounds of each side, alternating which goes first, on a throw-away deployment of
    the lab; ``setup(session)`` gives the plain cluster and ``{side: one round}``. Each round
    starts with no Slurm job of the lab user. The rounds, and what is left behind on login."""
    rounds: dict[str, list] = {}
    with tempfile.TemporaryDirectory() as state:
        env = {**os.environ, "TOPPIPE_STATE_DIR": state}
        os.environ["TOPPIPE_STATE_DIR"] = state
        raw = session = None
        try:
            print("up ...", file=sys.stderr, flush=True)
            deploy(["up", INVENTORY, "--no-check"], env)
            import toppipe

            session = toppipe.connect("lab")
            raw, sides = setup(session)
            for number in range(count):
                order = list(sides) if number % 2 == 0 else list(reversed(sides))  # each side first every other round
                for side in order:
                    wait(lambda: pool_empty(session) and not squeue(lab), 300, "no Slurm job of the lab user")
                    rounds.setdefault(side, []).append(sides[side]())
                    print(f"round {number + 1} {side}: {json.dumps(rounds[side][-1])}", file=sys.stderr, flush=True)
        finally:
            if raw is not None:
                raw.close()
            if session is not None:
                session.close()
            subprocess.run([sys.executable, "-m", "deploy", "down", INVENTORY, "--purge"], cwd=REPO, env=env, stdout=subprocess.DEVNULL)
            lab.ssh("login", f"scancel --me -n {RAW_JOB_NAME}", check=False)
    return rounds, squeue(lab) + leftover_processes(lab, site.name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    lab = load_lab()
    from deploy.inventory import load_site

    site = load_site(REPO / INVENTORY)

    def setup(session):
        session.adapt(0, 1, pool=POOL)
        raw = RawCluster(lab, site.host_root(site.scheduler_host))
        return raw, {"toppipe": lambda: toppipe_round(session), "dask-jobqueue": raw.round}

    rounds, left = side_by_side(lab, site, args.rounds, setup)
    report(rounds)
    if left:
        print(f"left behind on login: {'; '.join(left)}")
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
