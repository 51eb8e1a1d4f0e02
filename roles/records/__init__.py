"""The run-record store: SQLite on the site's db host (PostgreSQL arrives with containers)."""

from __future__ import annotations

import shlex

from deploy.resources import Ensure, Resource
from roles.base import HostContext, Role


def records_url(ctx: HostContext) -> str:
    return "sqlite:///" + ctx.path("data", "records.sqlite")


class RecordsRole(Role):
    name = "records"
    group = "db"

    def up(self, ctx: HostContext) -> list[Resource]:
        cmd = f"{shlex.quote(ctx.python)} -m toppipe.records"
        url = shlex.quote(records_url(ctx))
        return [Ensure("run-record store (SQLite)", check=f"{cmd} check {url}", apply=f"{cmd} init {url}")]
