"""The run-record store: PostgreSQL on a db host that runs containers, else SQLite there."""

from __future__ import annotations

from urllib.parse import urlencode

from deploy.inventory import Host, Site
from deploy.resources import Ensure, Resource
from roles.base import HostContext, Role
from roles.postgres import DATABASE, USER


def uses_postgres(site: Site) -> bool:
    return site.group("db")[0].runtime == "apptainer"


def records_url(ctx: HostContext, db_ctx: HostContext | None = None, through: str | None = None, port: int | None = None) -> str:
    """The store's URL as the host of *ctx* reaches it: PostgreSQL with that host's CA and
    password file, or the SQLite file on the db host (of *db_ctx*, by default *ctx*).

    *through* and *port* name a forwarded local end (the client's tunnel): libpq connects
    there (``hostaddr``) and still checks the certificate against the db host's address (``host``).
    """
    site = ctx.site
    db: Host = site.group("db")[0]
    if not uses_postgres(site):
        return "sqlite:///" + (db_ctx or ctx).path("data", "records.sqlite")
    query = {"hostaddr": through} if through else {}
    query |= {"sslmode": "verify-full", "sslrootcert": ctx.path("tls", "ca.pem"), "passfile": ctx.path("secrets", "pgpass")}
    return f"postgresql://{USER}@{db.address}:{port or site.settings.ports.postgres}/{DATABASE}?{urlencode(query)}"


class RecordsRole(Role):
    name = "records"
    group = "db"

    def images(self, ctx: HostContext) -> tuple[str, ...]:
        return ("scheduler",) if uses_postgres(ctx.site) else ()

    def up(self, ctx: HostContext) -> list[Resource]:
        url = records_url(ctx)
        kind = "PostgreSQL" if uses_postgres(ctx.site) else "SQLite"
        init = ctx.exec_command("scheduler", [ctx.python, "-m", "toppipe.records", "init", url])
        check = ctx.exec_command("scheduler", [ctx.python, "-m", "toppipe.records", "check", url])
        # PostgreSQL's is not probed by a no-op up (Python in a container: a second): the schema
        # changes with the code, which changes the host's inputs, and the database's data folder
        # and service are probed. SQLite's (a file, here) is.
        return [Ensure(f"run-record store ({kind}) schema", check=check, apply=init, probed=not uses_postgres(ctx.site))]
