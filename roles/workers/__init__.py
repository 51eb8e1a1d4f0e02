"""Dask workers on the hosts of the workers group, each under a nanny."""

from __future__ import annotations

from deploy.resources import Resource, Service, ServiceSpec
from roles.base import HostContext, Role
from roles.scheduler import allocation

#: Where a worker's HTTP server listens: it answers anyone, so only its own host.
LOOPBACK = "127.0.0.1"


#: Seconds a host worker of an agent in an allocation waits for a lost scheduler before it starts again.
FOLLOW_SECONDS = 60


def scheduler_argument(ctx: HostContext) -> list[str]:
    """How a worker finds the scheduler: its address, or the scheduler file of an agent in an allocation."""
    if ctx.site.agent_in_allocation:
        return ["--scheduler-file", allocation.scheduler_file(ctx.site)]
    return [ctx.scheduler_address]


class WorkersRole(Role):
    name = "workers"
    group = "workers"

    def images(self, ctx: HostContext) -> tuple[str, ...]:
        return ("compute",)

    def services(self, ctx: HostContext) -> list[ServiceSpec]:
        if ctx.host.workers == 0:
            return []
        settings = ctx.site.settings
        bind = settings.bind if ctx.host.is_local else ctx.host.address
        argv = [
            ctx.python, "-m", "distributed.cli.dask_worker", *scheduler_argument(ctx),
            "--nworkers", str(ctx.host.workers),
            "--nthreads", str(settings.workers.threads),
            "--memory-limit", settings.workers.memory,
            "--host", bind,
            "--name", ctx.host.name,
            "--nanny",
            "--no-dashboard",
            "--dashboard-address", f"{LOOPBACK}:0",  # its HTTP server (health, metrics) has no auth: loopback only
            "--local-directory", ctx.path("work", "workers"),
            "--resources", "host=1",
        ]  # fmt: skip
        if ctx.site.agent_in_allocation:
            # the agent's successor may run on another node: a worker that lost it for a minute
            # exits, and starts again with the address the scheduler file names then
            argv = ["sh", "-c", 'while :; do "$@"; sleep 2; done', "workers", *argv, "--death-timeout", str(FOLLOW_SECONDS)]
        return [ctx.spec("workers", argv, image="compute", env=(("TOPPIPE_HOST", ctx.host.name),), with_project=True)]

    def up(self, ctx: HostContext) -> list[Resource]:
        return [Service(spec) for spec in self.services(ctx)]
