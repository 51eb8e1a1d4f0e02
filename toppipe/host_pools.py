"""Scaling a hosts pool from a session, without restarting the workers that stay.

Fewer workers: the agent retires the ones chosen (idle first, from the hosts with
the most), their tasks finished and their data handed over. More workers: a deploy
run on this machine starts added services of one worker each (``workers.3``, see
:mod:`roles.workers`). ``up`` leaves added workers alone; ``down`` stops them.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time

from toppipe.errors import ToppipeError

_ADDED = re.compile(r"(?:.*?)(?:-[a-z][a-z0-9-]*)?\.(\d+)")
#: How long a scaled hosts pool may take to reach its count, and one round of trying.
SCALE_SECONDS = 120
ROUND_SECONDS = 6


def added_index(name: str, host: str = "") -> int | None:
    """The k of an added worker's name (``node1.3``, ``node1-gpu.2``), None for the inventory's;
    *host* is the start of the name (a host named by its address holds dots of its own)."""
    found = _ADDED.fullmatch(name[len(host):] if host and name.startswith(host) else name)
    return int(found.group(1)) if found else None


def plan(workers: list[dict], deployed: dict[str, int], n: int, extra_per_host: int) -> tuple[list[str], dict[str, list[int]]]:
    """The addresses to retire and, per host, the added workers' indices to start, so the pool has
    *n* workers (pure, tested). *workers* are the pool's now (``host``, ``name``, ``address``,
    ``processing``); *deployed* is the inventory's count per host."""
    counts = {host: 0 for host in deployed}
    for w in workers:
        counts[w["host"]] = counts.get(w["host"], 0) + 1
    if n < len(workers):
        retire: list[str] = []
        left = dict(counts)
        for _ in range(len(workers) - n):
            # idle before busy, added before the inventory's, then from the host with the most left
            chosen = min((w for w in workers if w["address"] not in retire),
                         key=lambda w: (w["processing"] > 0, added_index(w["name"], w["host"]) is None, -left[w["host"]], w["host"], w["name"]))  # fmt: skip
            retire.append(chosen["address"])
            left[chosen["host"]] -= 1
        return retire, {}
    used = {host: {added_index(w["name"], host) for w in workers if w["host"] == host} for host in deployed}
    added: dict[str, list[int]] = {}
    for _ in range(n - len(workers)):
        free = {h: [k for k in range(deployed[h] + 1, deployed[h] + 1 + extra_per_host) if k not in used[h]] for h in deployed}
        open_hosts = [h for h in deployed if free[h]]
        if not open_hosts:
            room = sum(deployed.values()) + extra_per_host * len(deployed)
            raise ToppipeError(f"a hosts pool of {len(deployed)} host(s) runs at most {room} workers here; raise per_host in the inventory")
        host = min(open_hosts, key=lambda h: (counts[h], h))
        k = free[host][0]
        added.setdefault(host, []).append(k)
        used[host].add(k)
        counts[host] += 1
    return [], added


async def scale(comm, record: dict, pool: dict, n: int, timeout: float = SCALE_SECONDS) -> None:
    """Bring the hosts pool *pool* (as the agent describes it) to *n* workers; *comm* reaches the agent.

    A worker retired a moment ago may still be exiting when its service is asked to start again
    (the deploy then finds it running): each round waits ROUND_SECONDS for the count, then plans again.
    """
    from roles.workers import EXTRA_PER_HOST

    deadline = time.monotonic() + timeout
    while True:
        workers = await _pool_workers(comm, record, pool["name"])
        if len(workers) == n:
            return
        if time.monotonic() > deadline:
            raise ToppipeError(f"pool {pool['name']} did not reach {n} workers within {timeout:.0f} s; see python -m deploy status {record['inventory']}")
        retire, added = plan(workers, pool["hosts"], n, EXTRA_PER_HOST)
        if retire:
            await comm.toppipe_retire(workers=retire)
        if added:
            await asyncio.to_thread(add_workers, record, pool["name"], added)
        settle = min(deadline, time.monotonic() + ROUND_SECONDS)
        while len(await _pool_workers(comm, record, pool["name"])) != n and time.monotonic() < settle:
            await asyncio.sleep(0.25)


async def _pool_workers(comm, record: dict, pool: str) -> list[dict]:
    by_address = {address: name for name, address in record.get("hosts", {}).items()}
    listed = await comm.toppipe_workers()
    return [{**w, "host": by_address.get(w["host"], w["host"])} for w in listed if w.get("pool") == pool]


def add_workers(record: dict, pool: str, added: dict[str, list[int]]) -> None:
    """Start the added workers: a deploy run in a child process (``python -m toppipe.host_pools``),
    so pyinfra's gevent stays out of the notebook and works from any thread."""
    env = {k: v for k, v in os.environ.items() if k != "TOPPIPE_SERVICE"}  # the child is no service's process
    where = [f"{host}:{','.join(map(str, indices))}" for host, indices in added.items()]
    argv = [sys.executable, "-m", "toppipe.host_pools", record["inventory"], pool, *where]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit {done.returncode}"]
        raise ToppipeError(lines[-1].removeprefix("error: "))


def _add_here(inventory: str, pool: str, added: dict[str, list[int]]) -> None:
    from deploy import DeployError
    from deploy.engine import get_engine
    from deploy.inventory import load_site
    from deploy.lifecycle import add_host_workers

    try:
        with get_engine() as engine:
            report = add_host_workers(engine, load_site(inventory), pool, added)
    except DeployError as exc:
        raise ToppipeError(str(exc)) from None
    if not report.ok:
        failed = "; ".join(f"{r.action.host}: {r.message}" for r in report.failed) or str(report.unreachable)
        raise ToppipeError(f"starting workers of pool {pool} failed: {failed}")


def main(argv: list[str]) -> int:
    """``python -m toppipe.host_pools INVENTORY POOL HOST:K[,K...]...``: what :func:`add_workers` runs."""
    try:
        added = {host: [int(k) for k in ks.split(",")] for host, _, ks in (a.partition(":") for a in argv[2:])}
    except ValueError:
        added = {}
    if len(argv) < 3 or not added:
        print("usage: python -m toppipe.host_pools INVENTORY POOL HOST:K[,K...]...", file=sys.stderr)
        return 2
    try:
        _add_here(argv[0], argv[1], added)
    except ToppipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from gevent import monkey

    monkey.patch_all(os=False, signal=False)  # as python -m deploy does: the hosts' ssh round trips overlap
    sys.exit(main(sys.argv[1:]))
