"""Redis on the db host (sites whose db host runs containers): TLS with the site's
certificate, a generated password, protected mode on, the site address only."""

from __future__ import annotations

from deploy.resources import Directory, File, Resource, Service, ServiceSpec
from roles.base import HostContext, Role


def runs_redis(site) -> bool:
    """Whether the site runs Redis: where its db host runs containers."""
    return site.group("db")[0].runtime == "apptainer"


def store_config(ctx: HostContext) -> dict:
    """``toppipe.store`` of a host's dask configuration: where its tasks (workers' hosts, and the
    scheduler host, whose configuration Slurm workers read) reach Redis; only the site's name elsewhere."""
    site = ctx.site
    found = {"site": site.name}
    if runs_redis(site) and {"workers", "scheduler"} & set(ctx.host.groups):
        found |= {"host": site.group("db")[0].address, "port": site.settings.ports.redis,
                  "ca-file": ctx.path("tls", "ca.pem"), "password-file": ctx.path("secrets", "redis_password")}  # fmt: skip
    return found


def redis_conf(ctx: HostContext) -> bytes:
    """The server's configuration; it holds the password, so it is a secret file."""
    tls = ctx.path("tls")
    password = ctx.files["secrets/redis_password"].decode().strip()
    lines = [
        f"bind {ctx.host.address}",
        "port 0",  # no plain-text port: TLS only
        f"tls-port {ctx.site.settings.ports.redis}",
        f"tls-cert-file {tls}/db.pem",
        f"tls-key-file {tls}/db.key",
        f"tls-ca-cert-file {tls}/ca.pem",
        "tls-auth-clients no",  # clients prove themselves with the password
        "protected-mode yes",
        f"requirepass {password}",
        f"dir {ctx.path('data', 'redis')}",
        "appendonly yes",
        "daemonize no",
        "set-proc-title no",  # a new title overwrites /proc/PID/environ, where the service's marker is
        "logfile \"\"",
    ]
    return ("\n".join(lines) + "\n").encode()


class RedisRole(Role):
    name = "redis"
    group = "db"

    def applies_to(self, site, host) -> bool:
        return super().applies_to(site, host) and runs_redis(site)

    def images(self, ctx: HostContext) -> tuple[str, ...]:
        return ("redis",)

    def services(self, ctx: HostContext) -> list[ServiceSpec]:
        argv = ["redis-server", ctx.path("etc", "redis.conf")]
        return [ctx.spec("redis", argv, image="redis", ports=((ctx.host.address, ctx.site.settings.ports.redis),))]

    def up(self, ctx: HostContext) -> list[Resource]:
        return [
            Directory(ctx.path("data", "redis"), 0o700),
            File(ctx.path("etc", "redis.conf"), redis_conf(ctx), 0o600, secret=True),
            *(Service(spec) for spec in self.services(ctx)),
        ]
