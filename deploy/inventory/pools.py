"""``toppipe.pools``: named kinds of worker, checked and resolved into :class:`Pool` objects.

Written in ``group_vars/all.yml`` as a mapping of pool names::

    pools:
      cpu:    {kind: slurm, partition: batch, cores: 2, memory: 4GiB}
      bigmem: {kind: slurm, partition: bigmem, memory: 64GiB, resources: {bigmem: 1}}
      desks:  {kind: hosts, hosts: [workers], per_host: 1, resources: {GPU: 1}}

Without it a site has the default pools: ``hosts`` (the workers group, from
``toppipe.workers``) and, with a slurm group, ``slurm`` (from ``toppipe.slurm``).
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any

from deploy.inventory import schema, values
from deploy.inventory.errors import InventoryError
from deploy.inventory.model import (DEFAULT_HOST_POOL, DEFAULT_SLURM_POOL, HOST_POOL_KEYS, RESERVED_RESOURCES,
                                    SLURM_POOL_KEYS, Host, Pool, PoolSettings, Settings)  # fmt: skip
from toppipe.pool_resources import POOL_PREFIX


#: What dask's ``--resources NAME=AMOUNT,...`` reads as one name.
RESOURCE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
#: Names run(on=...) reads as placements: a pool of another kind (or "local") could not be chosen by its name.
PLACEMENT_NAMES = {"local": None, "hosts": "hosts", "slurm": "slurm"}


def written_pools(raw: Any, file: Path, key: str) -> tuple[tuple[str, PoolSettings], ...]:
    """The pools as written under *key*, each checked against :class:`PoolSettings`."""
    if raw is None:
        return ()
    if not isinstance(raw, dict) or not raw:
        raise InventoryError(file, key, "expected a mapping of pool names, e.g. cpu: {kind: slurm, partition: batch}")
    pools = []
    for name, body in raw.items():
        where = f"{key}.{name}"
        try:
            values.pool_name(str(name))
        except ValueError as exc:
            raise InventoryError(file, where, str(exc)) from None
        if isinstance(body, dict) and "resources" in body:
            resources = _resources(body["resources"], file, f"{where}.resources")
            body = {k: v for k, v in body.items() if k != "resources"}
        else:
            resources = ()
        if isinstance(body, dict) and isinstance(body.get("hosts"), str):
            body = {**body, "hosts": [body["hosts"]]}
        if body is None or (isinstance(body, dict) and "kind" not in body):
            raise InventoryError(file, f"{where}.kind", "required key is missing; write kind: slurm or kind: hosts")
        settings = schema.build(PoolSettings, body, file, where)
        if str(name) in PLACEMENT_NAMES and PLACEMENT_NAMES[str(name)] != settings.kind:
            raise InventoryError(file, where, f"run(on='{name}') means {'this machine' if name == 'local' else f'any {name} pool'}, so a {settings.kind} pool cannot have this name; choose another")
        for other in HOST_POOL_KEYS if settings.kind == "slurm" else SLURM_POOL_KEYS:
            if other in body:
                kind = "hosts" if settings.kind == "slurm" else "slurm"
                raise InventoryError(file, f"{where}.{other}", f"only {kind} pools take {other}; remove it, or write kind: {kind}")
        for directive in settings.job_directives:
            _check(values.job_directive, directive, file, f"{where}.job_directives")
        pools.append((str(name), dataclasses.replace(settings, resources=resources)))
    return tuple(pools)


def _resources(raw: Any, file: Path, key: str) -> tuple[tuple[str, float], ...]:
    if not isinstance(raw, dict):
        raise InventoryError(file, key, "expected a mapping of resource names to amounts per worker, e.g. {GPU: 1}")
    found = []
    for name, amount in raw.items():
        name = str(name)
        if name in RESERVED_RESOURCES or name.startswith(POOL_PREFIX) or not RESOURCE_NAME.fullmatch(name):
            raise InventoryError(file, f"{key}.{name}", f"'{name}' cannot name a resource (letters, digits, '_', '-' and '.'; host, slurm and pool:... are toppipe's own); choose another name")
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not math.isfinite(amount) or amount <= 0:
            raise InventoryError(file, f"{key}.{name}", f"expected a positive amount per worker, got {amount!r}; e.g. {name}: 1")
        found.append((name, float(amount)))
    return tuple(found)


def _check(rule, value, file: Path, key: str):
    try:
        return rule(value)
    except ValueError as exc:
        raise InventoryError(file, key, str(exc)) from None


def resolve(settings: Settings, hosts: tuple[Host, ...], groups: dict[str, tuple[str, ...]], file: Path, key: str) -> tuple[Pool, ...]:
    """The site's pools with every value set: the written ones, else the default ones."""
    if not settings.pools:
        return _default_pools(settings, hosts, groups)
    pools = []
    for name, written in settings.pools:
        where = f"{key}.{name}"
        if written.kind == "slurm":
            if not groups.get("slurm"):
                raise InventoryError(file, f"{where}.kind", "slurm pools need a slurm group in hosts.yml (the hosts that submit jobs); add one, or write kind: hosts")
            pools.append(_slurm_pool(name, written, settings, file, where))
        else:
            pools.append(_host_pool(name, written, settings, hosts, groups, file, where))
    return tuple(pools)


def _slurm_pool(name: str, written: PoolSettings, settings: Settings, file: Path, where: str) -> Pool:
    slurm = settings.slurm
    cores = written.cores or slurm.cores
    processes = written.processes or 1
    if cores % processes:
        raise InventoryError(file, f"{where}.processes", f"{processes} worker processes cannot share {cores} cores evenly; choose a divisor of cores")
    threads = cores // processes
    return Pool(
        name=name, kind="slurm", threads=threads, memory=written.memory or slurm.memory, resources=written.resources,
        partition=written.partition or slurm.partition, account=written.account or slurm.account, qos=written.qos,
        walltime=written.walltime or slurm.walltime, cores=cores, processes=processes, gres=written.gres,
        constraint=written.constraint, job_directives=written.job_directives, local_scratch=bool(written.local_scratch),
        max_jobs=written.max_jobs or slurm.max_jobs,
    )  # fmt: skip


def _host_pool(name: str, written: PoolSettings, settings: Settings, hosts: tuple[Host, ...],
               groups: dict[str, tuple[str, ...]], file: Path, where: str) -> Pool:  # fmt: skip
    if not written.hosts:
        raise InventoryError(file, f"{where}.hosts", "a hosts pool needs hosts; list groups or hosts, e.g. hosts: [workers]")
    names: list[str] = []
    by_name = {h.name: h for h in hosts}
    for entry in written.hosts:
        members = groups.get(entry) or ((entry,) if entry in by_name else None)
        if members is None:
            guess = schema.nearest(entry, [*groups, *by_name])
            fix = f"did you mean '{guess}'?" if guess else "name a group or a host of hosts.yml"
            raise InventoryError(file, f"{where}.hosts", f"no group or host '{entry}'; {fix}")
        names += [m for m in members if m not in names]
    outside = [n for n in names if "workers" not in by_name[n].groups]
    if outside:
        raise InventoryError(file, f"{where}.hosts", f"{outside[0]} is not in the workers group (where the project and images go); add it there")
    # unwritten, per_host is the host's toppipe_workers (else toppipe.workers.per_host)
    counts = {n: written.per_host if written.per_host is not None else by_name[n].workers for n in names}
    return Pool(name=name, kind="hosts", threads=written.threads or settings.workers.threads,
                memory=written.memory or settings.workers.memory, resources=written.resources,
                hosts=tuple(counts.items()))  # fmt: skip


def _default_pools(settings: Settings, hosts: tuple[Host, ...], groups: dict[str, tuple[str, ...]]) -> tuple[Pool, ...]:
    workers = settings.workers
    members = [h for h in hosts if h.name in groups.get("workers", ())]
    pools = [Pool(name=DEFAULT_HOST_POOL, kind="hosts", threads=workers.threads, memory=workers.memory,
                  hosts=tuple((h.name, h.workers) for h in members))]  # fmt: skip
    if groups.get("slurm"):
        slurm = settings.slurm
        pools.append(Pool(name=DEFAULT_SLURM_POOL, kind="slurm", threads=slurm.cores, memory=slurm.memory,
                          partition=slurm.partition, account=slurm.account, walltime=slurm.walltime, cores=slurm.cores,
                          max_jobs=slurm.max_jobs))  # fmt: skip
    return tuple(pools)
