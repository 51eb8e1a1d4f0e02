"""What a pool's workers offer as dask resources, and whether a task fits them (pure).

Every worker carries its pool as the resource ``pool:<name>`` and its kind (``slurm`` or
``host``), one of each per thread, beside the pool's own resources (``GPU``, ``bigmem``...).
The inventory (``deploy.inventory``, for the workers' ``--resources``) and the site agent
(:mod:`toppipe.agent_pools`, to place and refuse tasks) both read it from here.
"""

from __future__ import annotations

POOL_PREFIX = "pool:"


def marker(pool: str) -> str:
    """The resource every worker of *pool* has, and a task placed on it asks for."""
    return f"{POOL_PREFIX}{pool}"


def worker_offer(pool: str, kind: str, threads: float, resources: dict[str, float] | None = None) -> dict[str, float]:
    """What each worker of *pool* offers: its pool and kind (one per thread) and the pool's own."""
    threads = float(threads)
    kind_resource = "slurm" if kind == "slurm" else "host"
    return {marker(pool): threads, kind_resource: threads, **{k: float(v) for k, v in (resources or {}).items()}}


def pool_of(resources: dict[str, float]) -> str | None:
    """The pool a worker belongs to, from its resources."""
    return next((name.removeprefix(POOL_PREFIX) for name in resources if name.startswith(POOL_PREFIX)), None)


def fits(restrictions: dict[str, float] | None, offer: dict[str, float]) -> bool:
    """Whether a worker offering *offer* can run a task asking for *restrictions*."""
    return all(offer.get(name, 0) >= amount for name, amount in (restrictions or {}).items())


def unplaceable_message(restrictions: dict[str, float], offers: dict[str, dict[str, float]]) -> str:
    """Why no pool runs a task asking for *restrictions*: the pools and what they offer."""
    asked = ", ".join(f"{k}={v:g}" for k, v in sorted(restrictions.items()))
    listed = "; ".join(
        f"{name} ({', '.join(f'{k}={v:g}' for k, v in sorted(offer.items()) if not k.startswith(POOL_PREFIX)) or 'nothing'})"
        for name, offer in offers.items()
    )
    return f"no pool of this site offers {asked}; its pools: {listed}"
