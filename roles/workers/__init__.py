"""Dask workers of the hosts pools, each pool a service on each of its hosts (under nannies).

A pool's service runs the inventory's count of workers (``per_host``). ``session.scale``
adds workers beyond it as services of one worker each (``<service>.<k>``, up to
EXTRA_PER_HOST per host and pool), and retires workers through the scheduler, so the
workers that stay are never restarted; ``down`` stops the added ones too.
"""

from __future__ import annotations

from deploy.inventory.model import Pool
from deploy.resources import Resource, Service, ServiceSpec
from roles.base import HostContext, Role
from roles.scheduler import allocation

#: Where a worker's HTTP server listens: it answers anyone, so only its own host.
LOOPBACK = "127.0.0.1"

#: Seconds a host worker of an agent in an allocation waits for a lost scheduler before it starts again.
FOLLOW_SECONDS = 60
#: How many workers ``session.scale`` may add to a pool on one host beyond the inventory's count.
EXTRA_PER_HOST = 4


def scheduler_argument(ctx: HostContext) -> list[str]:
    """How a worker finds the scheduler: its address, or the scheduler file of an agent in an allocation."""
    if ctx.site.agent_in_allocation:
        return ["--scheduler-file", allocation.scheduler_file(ctx.site)]
    return [ctx.scheduler_address]


def resources_argument(pool: Pool) -> str:
    """``--resources`` of a pool's workers: ``pool:<name>=<threads> host=<threads>`` and the pool's own."""
    return " ".join(f"{name}={amount:g}" for name, amount in pool.worker_resources().items())


def worker_count(ctx: HostContext, pool: Pool) -> int:
    """The inventory's count of *pool*'s workers on the host."""
    return dict(pool.hosts).get(ctx.host.name, 0)


def extra_name(pool: Pool, index: int) -> str:
    """The service of an added worker of *pool*: ``workers.3`` is the third worker of the default pool."""
    return f"{pool.service}.{index}"


def worker_name(host: str, pool: Pool, service: str) -> str:
    """The dask name of the service's workers: the host (``node1``, ``node1-gpu`` for pool gpu), and
    ``.k`` for an added one (``node1.3``); dask adds ``-i`` where a service runs several."""
    base = host if pool.service == "workers" else f"{host}-{pool.name}"
    return base + service.removeprefix(pool.service)


class WorkersRole(Role):
    name = "workers"
    group = "workers"

    def images(self, ctx: HostContext) -> tuple[str, ...]:
        return ("compute",)

    def services(self, ctx: HostContext) -> list[ServiceSpec]:
        specs = []
        for pool in ctx.site.host_pools(ctx.host.name):
            count = worker_count(ctx, pool)
            if count:
                specs.append(self.pool_service(ctx, pool, pool.service, count))
        return specs

    def pool_service(self, ctx: HostContext, pool: Pool, service: str, count: int) -> ServiceSpec:
        """The service running *count* workers of *pool* on the host."""
        bind = ctx.site.settings.bind if ctx.host.is_local else ctx.host.address
        name = worker_name(ctx.host.name, pool, service)
        argv = [
            ctx.python, "-m", "distributed.cli.dask_worker", *scheduler_argument(ctx),
            "--nworkers", str(count),
            "--nthreads", str(pool.threads),
            "--memory-limit", pool.memory,
            "--host", bind,
            "--name", name,
            "--nanny",
            "--no-dashboard",
            "--dashboard-address", f"{LOOPBACK}:0",  # its HTTP server (health, metrics) has no auth: loopback only
            "--local-directory", ctx.path("work", "workers"),
            "--resources", resources_argument(pool),
        ]  # fmt: skip
        if ctx.site.agent_in_allocation:
            # the agent's successor may run on another node: a worker that lost it for a minute
            # exits, and starts again with the address the scheduler file names then; one the
            # scheduler retired does not (toppipe.follow_scheduler)
            argv = [ctx.python, "-m", "toppipe.follow_scheduler", allocation.scheduler_file(ctx.site),
                    *argv, "--death-timeout", str(FOLLOW_SECONDS)]  # fmt: skip
        env = (("TOPPIPE_HOST", ctx.host.name), ("TOPPIPE_POOL", pool.name))
        # on the scheduler's host, started once the scheduler answers (the address they are given)
        # a dask worker ends with the scheduler it joined: up starts it again after a restarted scheduler
        return ctx.spec(service, argv, image="compute", env=env, with_project=True, after=("scheduler",),
                        ends_with_scheduler=True)

    def extra_services(self, ctx: HostContext, pool: Pool) -> list[ServiceSpec]:
        """Every service ``session.scale`` may add to *pool* on the host."""
        first = worker_count(ctx, pool) + 1
        return [self.pool_service(ctx, pool, extra_name(pool, k), 1) for k in range(first, first + EXTRA_PER_HOST)]

    def up(self, ctx: HostContext) -> list[Resource]:
        return [Service(spec) for spec in self.services(ctx)]

    def down(self, ctx: HostContext) -> list[Resource]:
        added = [spec for pool in ctx.site.host_pools(ctx.host.name) for spec in self.extra_services(ctx, pool)]
        return super().down(ctx) + [Service(spec, running=False) for spec in added]
