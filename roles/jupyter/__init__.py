"""JupyterLab on the client, token auth, serving the user's project folder."""

from __future__ import annotations

import os

from deploy.resources import Resource, Service, ServiceSpec
from roles.base import HostContext, Role


class JupyterRole(Role):
    name = "jupyter"
    group = "client"

    def images(self, ctx: HostContext) -> tuple[str, ...]:
        return ("client",)

    def services(self, ctx: HostContext) -> list[ServiceSpec]:
        settings = ctx.site.settings
        argv = [
            ctx.python, "-m", "jupyterlab",
            "--no-browser",
            f"--ServerApp.ip={settings.bind}",
            f"--ServerApp.port={settings.ports.jupyter}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={ctx.site.project_dir}",
        ]  # fmt: skip
        if ctx.host.is_local and os.geteuid() == 0:
            argv.append("--ServerApp.allow_root=True")  # CI and containers run as root
        env = (
            ("JUPYTER_TOKEN_FILE", ctx.path("secrets", "jupyter_token")),
            ("JUPYTER_RUNTIME_DIR", ctx.path("work", "jupyter", "runtime")),
            ("TOPPIPE_SITE", ctx.site.name),
        )
        return [
            ctx.spec(
                "jupyter", argv, image="client", env=env, workdir=str(ctx.site.project_dir), ports=((settings.bind, settings.ports.jupyter),)
            )
        ]

    def up(self, ctx: HostContext) -> list[Resource]:
        return [Service(spec) for spec in self.services(ctx)]
