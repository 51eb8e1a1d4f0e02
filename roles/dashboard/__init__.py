"""The site dashboard on the client: a Dash app (toppipe.dashboard), token auth,
loopback only.

It runs as a native process of the client's own environment (``CLIENT_PYTHON``:
``.venv``, or the client image with the host relay), even where the client's other
services are Apptainer instances: its actions are ``deploy`` actions (start, stop,
restart a service), and those reach this machine's processes and instances the way
``python -m deploy`` does, from the host, never from inside an instance.
"""

from __future__ import annotations

from deploy.host_shell import CLIENT_PYTHON
from deploy.resources import Resource, Service, ServiceSpec
from roles.base import HostContext, Role


class DashboardRole(Role):
    name = "dashboard"
    group = "client"

    def services(self, ctx: HostContext) -> list[ServiceSpec]:
        settings = ctx.site.settings
        argv = [CLIENT_PYTHON, "-m", "toppipe.dashboard", "--site", ctx.site.name,
                "--bind", settings.bind, "--port", str(settings.ports.app)]  # fmt: skip
        env = (
            ("TOPPIPE_DASHBOARD_TOKEN_FILE", ctx.path("secrets", "dashboard_token")),
            ("TOPPIPE_STATE_DIR", str(ctx.site.state_dir.parent)),  # the same site state as this deploy's
        )
        return [ctx.spec("dashboard", argv, env=env, ports=((settings.bind, settings.ports.app),), runtime="native")]

    def up(self, ctx: HostContext) -> list[Resource]:
        return [Service(spec) for spec in self.services(ctx)]
