"""JupyterLab on the client, token auth, serving the user's project folder, with the Dask
sidebar (dask-labextension) showing the site's cluster: its factory attaches
:class:`toppipe.cluster.SiteCluster` to the site's scheduler, whose trash button closes only
that connection, and its dashboard panes go through Jupyter's proxy to the dashboard's local end."""

from __future__ import annotations

import os

from deploy.resources import Resource, Service, ServiceSpec
from roles.base import HostContext, Role


def labextension_env(site: str) -> tuple[tuple[str, str], ...]:
    """dask settings (as environment) that make the Dask sidebar list *site*'s cluster from the start."""
    return (
        ("DASK_LABEXTENSION__FACTORY__MODULE", "toppipe.cluster"),
        ("DASK_LABEXTENSION__FACTORY__CLASS", "sidebar_cluster"),
        ("DASK_LABEXTENSION__FACTORY__KWARGS__SITE", site),
        ("DASK_LABEXTENSION__INITIAL", repr([{"name": site}])),
        ("DASK_DISTRIBUTED__CLIENT__SECURITY_LOADER", "toppipe.cluster.site_security_loader"),  # Client("tls://...")
    )


class JupyterRole(Role):
    name = "jupyter"
    group = "client"

    def images(self, ctx: HostContext) -> tuple[str, ...]:
        return ("client",)

    def services(self, ctx: HostContext) -> list[ServiceSpec]:
        settings = ctx.site.settings
        argv = [
            ctx.python, "-m", "toppipe.jupyter",  # JupyterLab, ended without the interpreter's teardown
            "--no-browser",
            f"--ServerApp.ip={settings.bind}",
            f"--ServerApp.port={settings.ports.jupyter}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={ctx.site.project_dir}",
            f"--LabApp.workspaces_dir={ctx.path('work', 'jupyter', 'workspaces')}",  # the site's, not the user's home
        ]  # fmt: skip
        if ctx.host.is_local and os.geteuid() == 0:
            argv.append("--ServerApp.allow_root=True")  # CI and containers run as root
        env = (
            ("JUPYTER_TOKEN_FILE", ctx.path("secrets", "jupyter_token")),
            ("JUPYTER_RUNTIME_DIR", ctx.path("work", "jupyter", "runtime")),
            ("TOPPIPE_SITE", ctx.site.name),
            ("TOPPIPE_STATE_DIR", str(ctx.site.state_dir.parent)),  # kernels and the sidebar find the site's record
            *labextension_env(ctx.site.name),
        )
        return [
            ctx.spec(
                "jupyter", argv, image="client", env=env, workdir=str(ctx.site.project_dir), ports=((settings.bind, settings.ports.jupyter),)
            )
        ]

    def up(self, ctx: HostContext) -> list[Resource]:
        return [Service(spec) for spec in self.services(ctx)]
