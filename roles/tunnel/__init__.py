"""The client's tunnel to a site it cannot reach directly: one ssh connection to the
scheduler host (the login node), forwarding each service the client talks to onto
the client's loopback.

``ssh -tt -L`` is the whole tunnel: ssh's own forwarding, with the inventory's user,
key, known-hosts file (strict) and ProxyJump hops, keep-alives that end a dead
connection, and ``ExitOnForwardFailure`` so that a local port it cannot take ends it
at start. The service machinery supervises it like any other: its local ports answer
once ssh has logged in, ``status``/``check`` probe them, ``up`` starts it again when it
died, ``down`` stops it.

It runs natively on the client, also on apptainer sites: it needs the user's ssh
client, key, known-hosts file, ssh config and agent as they are on the desktop, all
of which a container would have to be given one by one (binds, the agent's socket),
and nothing in it needs the pinned environment. The client's containers share the
host's network, so Jupyter's kernels reach its loopback ends all the same.

The forwarded addresses are resolved on the scheduler host: the scheduler on its
site address, the dask dashboard on that host's loopback (where it listens), and
PostgreSQL and Redis on the db host's address. TLS still verifies the site's
certificates through it: dask checks the peer's chain against the site CA (it never
checks host names), and the records URL keeps the db host's address as ``host`` for
PostgreSQL's ``verify-full`` name check while ``hostaddr`` connects to the local end.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from deploy.host_shell import CLIENT_PYTHON
from deploy.inventory import Host, Site, jumps
from deploy.resources import File, Resource, Service, ServiceSpec
from roles.base import HostContext, Role
from roles.records import uses_postgres
from roles.scheduler import allocation

#: Where the tunnel's local ends listen on the client.
LOOPBACK = "127.0.0.1"
#: The tunnel's session: a terminal (``-tt``) holding a command that only waits. sshd sends small
#: packets at once (TCP_NODELAY) only for a session with a terminal; with ``ssh -N`` each new
#: forwarded connection waited for a delayed ACK (about 40 ms: dask's handshake through the tunnel
#: took 46 ms, 5 ms with a terminal), and a session opens four. It ends with the connection.
HOLD = ["-tt"]
HOLD_COMMAND = "exec sleep 2147483647"
#: Seconds between ssh keep-alives, and how many may go unanswered before ssh gives up
#: (a dead link ends the tunnel within about 15 s, and the next ``up`` restarts it).
ALIVE_INTERVAL, ALIVE_COUNT = 5, 3
CONNECT_TIMEOUT = 10


@dataclass(frozen=True)
class Forward:
    """One service carried by the tunnel: the client's ``127.0.0.1:local`` to ``remote:port``
    as the scheduler host resolves it."""

    name: str
    local: int
    remote: str
    port: int
    host: str  # the inventory host the service runs on

    def option(self) -> str:
        remote = f"[{self.remote}]" if ":" in self.remote else self.remote
        return f"{LOOPBACK}:{self.local}:{remote}:{self.port}"


def forwards(site: Site) -> tuple[Forward, ...]:
    """What the tunnel of *site* carries; each local end is its site port plus ``toppipe.tunnel.offset``."""
    ports, offset = site.settings.ports, site.settings.tunnel.offset
    scheduler = site.scheduler_host
    # an agent inside an allocation is reached on its node's loopback (the tunnel ends there)
    scheduler_address = LOOPBACK if site.agent_in_allocation else scheduler.address
    found = [
        Forward("scheduler", ports.scheduler + offset, scheduler_address, ports.scheduler, scheduler.name),
        Forward("dashboard", ports.dashboard + offset, site.settings.bind, ports.dashboard, scheduler.name),  # its loopback
    ]
    if uses_postgres(site):  # PostgreSQL and Redis run where the db host runs containers
        db = site.group("db")[0]
        found += [Forward("postgres", ports.postgres + offset, db.address, ports.postgres, db.name),
                  Forward("redis", ports.redis + offset, db.address, ports.redis, db.name)]  # fmt: skip
    return tuple(found)


def client_ports(site: Site, host: str, ports: tuple[tuple[str, int], ...]) -> list[tuple[str, int]]:
    """A service's *ports* on *host* as the client reaches them: the tunnel's local end where
    it carries one, else as they are."""
    ends = {(f.host, f.remote, f.port): (LOOPBACK, f.local) for f in forwards(site)} if site.tunnelled else {}
    return [ends.get((host, address, port), (address, port)) for address, port in ports]


def local_port(site: Site, name: str) -> int | None:
    """The client's local end of service *name*, or None when the site is not tunnelled or the tunnel does not carry it."""
    if not site.tunnelled:
        return None
    return next((f.local for f in forwards(site) if f.name == name), None)


def ssh_options(via: Host) -> list[str]:
    """ssh's options for the tunnel's connections, as the inventory says to reach *via*."""
    argv = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "ExitOnForwardFailure=yes",
            "-o", f"ServerAliveInterval={ALIVE_INTERVAL}", "-o", f"ServerAliveCountMax={ALIVE_COUNT}",
            "-o", f"ConnectTimeout={CONNECT_TIMEOUT}", "-o", "LogLevel=ERROR"]  # fmt: skip
    if via.known_hosts:
        argv += ["-o", f"UserKnownHostsFile={via.known_hosts}"]
    if via.ssh_key:
        argv += ["-i", via.ssh_key, "-o", "IdentitiesOnly=yes"]
    return argv


def ssh_argv(site: Site) -> list[str]:
    """The tunnel's command: ssh to the scheduler host as the inventory says, forwarding only."""
    via: Host = site.scheduler_host
    argv = ["ssh", *HOLD, *ssh_options(via), "-o", "ControlPath=none"]  # its own connection, never a shared master's
    if via.jump:
        argv += ["-o", f"ProxyJump={via.jump}"]
    if via.port:
        argv += ["-p", str(via.port)]
    for forward in forwards(site):
        argv += ["-L", forward.option()]
    return [*argv, f"{via.user}@{via.address}" if via.user else via.address, HOLD_COMMAND]


def follow_config(ctx: HostContext) -> dict:
    """What :mod:`roles.tunnel.follow` reads: how to reach the login node, the agent's scheduler file,
    and the forwards, resolved on the agent's node."""
    site, via = ctx.site, ctx.site.scheduler_host
    return {
        "options": ssh_options(via),
        "hold": HOLD,
        "hold_command": HOLD_COMMAND,
        "ssh_config": str(site.state_dir / "ssh_config"),  # the login node's own settings as a hop
        "jumps": via.jump.split(",") if via.jump else [],
        "login": f"{via.user}@{via.address}" if via.user else via.address,
        "login_port": via.port,
        "user": via.user,
        "scheduler_file": allocation.scheduler_file(site),
        "forwards": [[f.local, f.remote, f.port] for f in forwards(site)],
    }


class TunnelRole(Role):
    name = "tunnel"
    group = "client"

    def applies_to(self, site: Site, host: Host) -> bool:
        return super().applies_to(site, host) and site.tunnelled

    def services(self, ctx: HostContext) -> list[ServiceSpec]:
        ports = tuple((LOOPBACK, f.local) for f in forwards(ctx.site))
        if ctx.site.agent_in_allocation:  # the agent's node is known once its job runs: follow it
            argv = [CLIENT_PYTHON, "-m", "roles.tunnel.follow", ctx.path("etc", "tunnel.json")]
            return [ctx.spec("tunnel", argv, ports=ports, start_timeout=allocation.START_SECONDS, runtime="native",
                             files=(ctx.path("etc", "tunnel.json"),))]  # fmt: skip
        return [ctx.spec("tunnel", ssh_argv(ctx.site), ports=ports, start_timeout=CONNECT_TIMEOUT * 3, runtime="native")]

    def up(self, ctx: HostContext) -> list[Resource]:
        found: list[Resource] = []
        if ctx.site.agent_in_allocation:
            config = follow_config(ctx)
            found += [File(config["ssh_config"], jumps.ssh_config_text(ctx.site).encode(), 0o600),
                      File(ctx.path("etc", "tunnel.json"), json.dumps(config, indent=1, sort_keys=True).encode(), 0o600)]  # fmt: skip
        return found + [Service(spec) for spec in self.services(ctx)]
