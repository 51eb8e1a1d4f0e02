"""Every host: the site's folders, its TLS material and dask configuration."""

from __future__ import annotations

import yaml

from deploy.resources import Absent, Directory, File, Resource
from roles.base import HostContext, Role
from roles.redis import store_config


def dask_config(ctx: HostContext) -> bytes:
    """The dask settings every process of the site reads: TLS, and nothing in clear; and where
    tasks reach the site's Redis (``toppipe.store``, read by :func:`toppipe.store`)."""
    tls = ctx.path("tls")
    pair = {role: {"cert": f"{tls}/{role}.pem", "key": f"{tls}/{role}.key"} for role in ("scheduler", "worker", "client")}
    config = {
        "distributed": {
            "comm": {
                "require-encryption": True,
                "default-scheme": "tls",
                "tls": {"ca-file": f"{tls}/ca.pem", "min-version": 1.2, **pair},
            }
        },
        "toppipe": {"store": store_config(ctx)},
    }
    return yaml.safe_dump(config, sort_keys=True).encode()


FOLDERS = ("services", "etc", "etc/dask", "tls", "secrets", "work", "data")


class SiteRole(Role):
    name = "site"
    group = "all"

    def up(self, ctx: HostContext) -> list[Resource]:
        resources: list[Resource] = [
            Directory(ctx.root, 0o700),
            *(Directory(ctx.path(d), 0o700) for d in FOLDERS),
        ]
        for name, content in sorted(ctx.files.items()):
            secret = name.endswith(".key") or name.startswith("secrets/")
            resources.append(File(ctx.path(name), content, 0o600, secret=secret))
        resources.append(File(ctx.path("etc", "dask", "toppipe.yaml"), dask_config(ctx), 0o600))
        return resources

    def purge(self, ctx: HostContext) -> list[Resource]:
        return [Absent(ctx.root)]
