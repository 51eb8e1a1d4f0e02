"""Dask workers on the hosts of the workers group, each under a nanny."""

from __future__ import annotations

from deploy.resources import Resource, Service, ServiceSpec
from roles.base import HostContext, Role

#: Where a worker's HTTP server listens: it answers anyone, so only its own host.
LOOPBACK = "127.0.0.1"


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
            ctx.python, "-m", "distributed.cli.dask_worker", ctx.scheduler_address,
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
        return [ctx.spec("workers", argv, image="compute", env=(("TOPPIPE_HOST", ctx.host.name),), with_project=True)]

    def up(self, ctx: HostContext) -> list[Resource]:
        return [Service(spec) for spec in self.services(ctx)]
