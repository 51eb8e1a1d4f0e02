"""The connection record's ways to the site's Redis (``session.store``) and to its folder
(``session.fs``), as the client reaches them (see :mod:`toppipe.site_store`,
:mod:`toppipe.site_files`)."""

from __future__ import annotations

from deploy.inventory import Site
from roles import tunnel
from roles.redis import runs_redis


def redis_entry(site: Site) -> dict | None:
    """Redis on the db host, or the tunnel's local end of it; None on a site without Redis."""
    if not runs_redis(site):
        return None
    host, port = site.group("db")[0].address, site.settings.ports.redis
    local = tunnel.local_port(site, "redis")
    if local is not None:
        host, port = tunnel.LOOPBACK, local
    state = site.state_dir
    return {"host": host, "port": port, "ca": str(state / "tls" / "ca.pem"), "password_file": str(state / "secrets" / "redis_password")}


def files_entry(site: Site, results: str) -> dict:
    """``<shared>/<site>`` over ssh to the scheduler host (the login node), with the inventory's
    settings for it; on a site without a shared folder, this machine's project and *results* folders."""
    shared = site.settings.paths.shared
    if not shared:
        return {"local": {"project": str(site.project_dir), "results": results}}
    login = site.scheduler_host
    ssh = {"address": login.address, "port": login.port, "user": login.user, "key": login.ssh_key,
           "known_hosts": login.known_hosts, "jump": login.jump,
           "ssh_config": str(site.state_dir / "ssh_config") if login.jump else None}  # fmt: skip
    return {"root": f"{shared}/{site.name}", "ssh": ssh}

