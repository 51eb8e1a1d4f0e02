"""PostgreSQL on the db host, for the run records (sites whose db host runs containers).

The data folder is ``<root>/data/postgres`` on the db host's own storage: it
outlives ``down`` and instance restarts; only ``down --purge`` removes it.
Clients log in as ``toppipe`` with scram-sha-256 over TLS (the site's CA);
connections without TLS are refused, and the server listens on the db host's
site address only.
"""

from __future__ import annotations

import shlex

from deploy.resources import Ensure, File, Resource, Service, ServiceSpec
from roles.base import HostContext, Role

USER = DATABASE = "toppipe"


def hba(ctx: HostContext) -> bytes:
    """Who may connect: the records user over TLS with a scram password; nobody else, nothing in clear."""
    return (
        "# TYPE    DATABASE USER     ADDRESS    METHOD\n"
        "local     all      all                scram-sha-256\n"
        f"hostssl   {DATABASE}  {USER}  all        scram-sha-256\n"
        "hostnossl all      all      all        reject\n"
    ).encode()


class PostgresRole(Role):
    name = "postgres"
    group = "db"

    def applies_to(self, site, host) -> bool:
        return super().applies_to(site, host) and host.runtime == "apptainer"

    def images(self, ctx: HostContext) -> tuple[str, ...]:
        return ("postgres",)

    def data_dir(self, ctx: HostContext) -> str:
        return ctx.path("data", "postgres")

    def services(self, ctx: HostContext) -> list[ServiceSpec]:
        port = ctx.site.settings.ports.postgres
        tls = ctx.path("tls")
        argv = [
            "postgres", "-D", self.data_dir(ctx),
            "-c", f"listen_addresses={ctx.host.address}",
            "-c", f"port={port}",
            "-c", f"hba_file={ctx.path('etc', 'pg_hba.conf')}",
            "-c", f"unix_socket_directories={ctx.path('services', 'postgres')}",
            "-c", "ssl=on",
            "-c", f"ssl_cert_file={tls}/db.pem",
            "-c", f"ssl_key_file={tls}/db.key",
            "-c", f"ssl_ca_file={tls}/ca.pem",
            "-c", "password_encryption=scram-sha-256",
        ]  # fmt: skip
        stop = ("pg_ctl", "stop", "-D", self.data_dir(ctx), "-m", "fast", "-w", "-t", "30")  # no crash recovery at the next start
        check = ("postgres", "-C", "data_directory", *argv[1:])  # the settings, parsed by the server, beside the running one
        return [ctx.spec("postgres", argv, image="postgres", ports=((ctx.host.address, port),), stop_argv=stop,
                         check_argv=check, files=(ctx.path("etc", "pg_hba.conf"),))]  # fmt: skip

    def up(self, ctx: HostContext) -> list[Resource]:
        data = shlex.quote(self.data_dir(ctx))
        initdb = ctx.exec_command(
            "postgres",
            ["initdb", "-D", self.data_dir(ctx), "-U", USER, "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8",
             f"--pwfile={ctx.path('secrets', 'postgres_password')}"],
        )  # fmt: skip
        socket, port = ctx.path("services", "postgres"), ctx.site.settings.ports.postgres  # the socket's name has the port
        login = (("PGPASSFILE", ctx.path("secrets", "pgpass")),)
        createdb = ctx.exec_command("postgres", ["createdb", "-h", socket, "-p", str(port), "-U", USER, DATABASE], env=login)
        select = ctx.exec_command("postgres", ["psql", "-h", socket, "-p", str(port), "-U", USER, "-d", DATABASE, "-Atc", "select 1"], env=login)
        ready = ctx.exec_command("postgres", ["pg_isready", "-q", "-h", socket, "-p", str(port), "-t", "60"])
        return [
            File(ctx.path("etc", "pg_hba.conf"), hba(ctx), 0o600),
            Ensure("PostgreSQL data folder (initdb, scram)", f"[ -s {data}/PG_VERSION ]", f"set -e; {initdb} >/dev/null"),
            *(Service(spec) for spec in self.services(ctx)),
            # its port answers before it accepts connections (recovery after a crash): wait for that first
            # (not probed by a no-op up: two container starts; its service's status and data folder are)
            Ensure(f"database {DATABASE}", check=f"{ready} && {select}", apply=f"{ready}; {createdb}", probed=False),
        ]
