"""The dask scheduler and its dashboard, TLS only."""

from __future__ import annotations

from deploy.resources import Resource, Service, ServiceSpec
from roles.base import HostContext, Role


class SchedulerRole(Role):
    name = "scheduler"
    group = "scheduler"

    def services(self, ctx: HostContext) -> list[ServiceSpec]:
        settings = ctx.site.settings
        bind = settings.bind if ctx.host.is_local else ctx.host.address
        argv = [
            ctx.python, "-m", "distributed.cli.dask_scheduler",
            "--host", bind,
            "--port", str(settings.ports.scheduler),
            "--protocol", "tls",
            "--dashboard-address", f"{settings.bind}:{settings.ports.dashboard}",
            "--scheduler-file", ctx.path("scheduler.json"),
        ]  # fmt: skip
        ports = ((bind, settings.ports.scheduler), (settings.bind, settings.ports.dashboard))
        return [ctx.spec("scheduler", argv, ports=ports)]

    def up(self, ctx: HostContext) -> list[Resource]:
        return [Service(spec) for spec in self.services(ctx)]
