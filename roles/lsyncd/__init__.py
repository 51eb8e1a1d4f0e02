"""lsyncd on the client: the user's project folder kept in sync with the site's
shared filesystem (``<shared>/<site>/project``), through the scheduler host,
over ssh with the inventory's key, known hosts and a ControlMaster.

It runs on sites with a shared filesystem whose client runs containers (the
client image holds lsyncd, rsync and ssh).
"""

from __future__ import annotations

import json
import posixpath

from deploy.inventory import Host, Site
from deploy.resources import File, Resource, Service, ServiceSpec
from roles.base import HostContext, Role
from toppipe.sync_exclude import SYNC_EXCLUDE

#: Seconds lsyncd gathers events before it syncs: explicit and small.
DELAY = 0.3
#: Never sent: version control, environments, caches (the same list a run's snapshot leaves out).
EXCLUDE = SYNC_EXCLUDE


#: The longest path of a unix socket, and what ssh adds to a ControlPath while it makes the socket.
SOCKET_PATH_MAX, CONTROL_SUFFIX = 107, 17


def target_dir(site: Site) -> str:
    return f"{site.settings.paths.shared}/{site.name}/project"


def _lua(value) -> str:
    """A Lua literal for a str, number, bool, list or dict (JSON strings are valid Lua strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "{ " + ", ".join(_lua(v) for v in value) + " }"
    return "{ " + ", ".join(f"{k} = {_lua(v)}" for k, v in value.items()) + " }"


def lsyncd_config(ctx: HostContext) -> bytes:
    site, via = ctx.site, ctx.site.scheduler_host
    rundir = ctx.path("services", "lsyncd")
    options = {"StrictHostKeyChecking": "yes", "BatchMode": "yes"}
    # user@host:port, not %C (40 characters): a socket path has room for 107 bytes, and ssh
    # adds 17 while it makes the socket; a deeper state folder syncs without a master
    control = posixpath.join(rundir, f"cm-{via.user or 'me'}@{via.address}:{via.port or 22}")
    if len(control.encode()) + CONTROL_SUFFIX <= SOCKET_PATH_MAX:
        options |= {"ControlMaster": "auto", "ControlPath": posixpath.join(rundir, "cm-%r@%h:%p"), "ControlPersist": "60"}
    if via.known_hosts:
        options["UserKnownHostsFile"] = via.known_hosts
    if via.jump:
        options["ProxyJump"] = via.jump
    ssh = {"port": via.port or 22, "options": options}
    if via.ssh_key:
        ssh["identityFile"] = via.ssh_key
    settings = {"nodaemon": True, "insist": True, "statusFile": posixpath.join(rundir, "status"), "statusInterval": 5}
    sync = {
        "source": str(site.project_dir) + "/",
        "host": f"{via.user}@{via.address}" if via.user else via.address,
        "targetdir": target_dir(site),
        "delay": DELAY,
        "exclude": list(EXCLUDE),
        # By content: rsync's quick check (same size, same second) skipped same-size edits.
        "rsync": {"archive": True, "compress": False, "checksum": True},
        "ssh": ssh,
    }
    body = ", ".join(f"{k} = {_lua(v)}" for k, v in sync.items())
    return f"settings {_lua(settings)}\nsync {{ default.rsyncssh, {body} }}\n".encode()


class LsyncdRole(Role):
    name = "lsyncd"
    group = "client"

    def applies_to(self, site: Site, host: Host) -> bool:
        remote = any(not h.is_local for h in site.hosts)
        return super().applies_to(site, host) and remote and bool(site.settings.paths.shared) and host.runtime == "apptainer"

    def images(self, ctx: HostContext) -> tuple[str, ...]:
        return ("client",)

    def services(self, ctx: HostContext) -> list[ServiceSpec]:
        via = ctx.site.scheduler_host
        binds = tuple(dict.fromkeys(posixpath.dirname(p) for p in (via.ssh_key, via.known_hosts) if p))
        argv = ["lsyncd", ctx.path("etc", "lsyncd.lua")]
        return [ctx.spec("lsyncd", argv, image="client", binds=binds, env=(("TOPPIPE_LSYNCD", _digest(lsyncd_config(ctx))),))]

    def up(self, ctx: HostContext) -> list[Resource]:
        return [File(ctx.path("etc", "lsyncd.lua"), lsyncd_config(ctx), 0o600), *(Service(s) for s in self.services(ctx))]


def _digest(content: bytes) -> str:
    import hashlib

    return hashlib.sha256(content).hexdigest()[:12]
