"""What ``up``, ``down``, ``plan`` and ``status`` do, as plain functions.

Roles give resources per host; this module turns them into actions, checks
what would clash before anything starts, hands the actions to an engine and
writes the site's connection record. It never prints: callers pass a
progress callback and render the returned reports.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields

from deploy import UserError, artifacts
from deploy.engine import Engine, Progress, RunReport
from deploy.inventory import Host, Site
from deploy.resources import Action, Ensure, Service, ServiceSpec
from deploy.runtime import ServiceState, get_runtime
from deploy.state import SiteFiles, site_files, write_connection
from roles import ROLES, HostContext
from roles.records import records_url


def host_python(host: Host, root: str) -> str:
    """The Python of the pinned environment on *host*."""
    if host.python:
        return host.python
    if host.is_local:
        return sys.executable
    return f"{root}/venv/bin/python"


def contexts(engine: Engine, site: Site, secrets: SiteFiles, shipped: dict | None = None) -> dict[str, HostContext]:
    """Per host: where the site lives there and what it receives."""
    homes = engine.home_dirs(site)
    found = {}
    for host in site.hosts:
        root = site.host_root(host, homes.get(host.name))
        found[host.name] = HostContext(
            site=site,
            host=host,
            root=root,
            python=host_python(host, root),
            files=secrets.for_host(is_client="client" in host.groups),
            artifacts=shipped or {},
        )
    return found


def build_artifacts(site: Site, note: Callable[[str], None]) -> dict:
    """Wheelhouse and code bundle, when the site has remote hosts."""
    if all(h.is_local for h in site.hosts):
        return {}
    return {"wheelhouse": artifacts.wheelhouse(note), "source": artifacts.source_bundle()}


def _per_role(site: Site, ctxs: dict[str, HostContext], method: str, roles=ROLES) -> list[tuple[str, str, object]]:
    """(host, role, item) for every item that ``role.<method>(ctx)`` returns, role by role."""
    return [
        (host.name, role.name, item)
        for role in roles
        for host in site.hosts
        if role.applies_to(site, host)
        for item in getattr(role, method)(ctxs[host.name])
    ]


def up_actions(site: Site, ctxs: dict[str, HostContext]) -> list[Action]:
    return [Action(*row) for row in _per_role(site, ctxs, "up")]


def down_actions(site: Site, ctxs: dict[str, HostContext], purge: bool) -> list[Action]:
    actions = [Action(*row) for row in _per_role(site, ctxs, "down", reversed(ROLES))]
    for host in site.hosts:
        runtime = get_runtime(host.runtime)
        leftovers = runtime.leftovers_command(site.name)
        check = f'[ -z "$({leftovers})" ]'
        actions.append(Action(host.name, "site", Ensure("no process of the site left", check, runtime.sweep_command(site.name))))
    if purge:
        actions += [Action(*row) for row in _per_role(site, ctxs, "purge", reversed(ROLES))]
    return actions


def services_by_role(site: Site, ctxs: dict[str, HostContext]) -> list[tuple[str, str, ServiceSpec]]:
    """(host, role, spec) of every service of the site."""
    return _per_role(site, ctxs, "services")


def services(site: Site, ctxs: dict[str, HostContext]) -> list[tuple[str, ServiceSpec]]:
    return [(host, spec) for host, _, spec in services_by_role(site, ctxs)]


def _port_key(site: Site, port: int) -> str:
    for field in fields(site.settings.ports):
        if getattr(site.settings.ports, field.name) == port:
            return f"toppipe.ports.{field.name}"
    return "toppipe.ports"


def preflight(engine: Engine, site: Site, ctxs: dict[str, HostContext]) -> dict[tuple[str, str], ServiceState]:
    """Refuse to start anything when a port a service needs is taken by another program."""
    states = engine.service_states(site, services(site, ctxs))
    for (host, name), state in sorted(states.items()):
        for hostport in state.busy_ports():
            port = int(hostport.rsplit(":", 1)[1])
            raise UserError(
                f"{site.inventory.parent}/group_vars/all.yml: {_port_key(site, port)}: port {port} on {host} is in use "
                f"by another program, so {name} cannot start; stop that program or choose a free port"
            )
    return states


@dataclass(frozen=True)
class UpResult:
    report: RunReport
    connection: dict


def connection_record(site: Site, ctxs: dict[str, HostContext]) -> dict:
    settings = site.settings
    ctx = ctxs[site.scheduler_host.name]
    client = site.state_dir
    return {
        "inventory": str(site.inventory.parent.resolve()),
        "scheduler": ctx.scheduler_address,
        "dashboard": f"http://{settings.bind}:{settings.ports.dashboard}/status",
        "jupyter": f"http://{settings.bind}:{settings.ports.jupyter}/lab",
        "jupyter_token_file": str(client / "secrets" / "jupyter_token"),
        "tls": {"ca": str(client / "tls/ca.pem"), "cert": str(client / "tls/client.pem"), "key": str(client / "tls/client.key")},
        "records": records_url(ctxs[site.group("db")[0].name]),
        "services": [{"host": host, "name": spec.name, "ports": spec.ports} for host, spec in services(site, ctxs)],
        "hosts": {h.name: h.address for h in site.hosts},
    }


def up(engine: Engine, site: Site, progress: Progress | None = None, note: Callable[[str], None] = lambda _: None) -> UpResult:
    secrets = site_files(site)
    ctxs = contexts(engine, site, secrets, build_artifacts(site, note))
    preflight(engine, site, ctxs)
    secrets.save(site)
    report = engine.apply(site, up_actions(site, ctxs), progress)
    record = connection_record(site, ctxs)
    if report.ok:
        write_connection(site, record)
    return UpResult(report, record)


def plan(engine: Engine, site: Site) -> RunReport:
    ctxs = contexts(engine, site, site_files(site), build_artifacts(site, lambda _: None))
    return engine.plan(site, up_actions(site, ctxs))


def down(engine: Engine, site: Site, purge: bool, progress: Progress | None = None) -> RunReport:
    ctxs = contexts(engine, site, site_files(site))
    report = engine.apply(site, down_actions(site, ctxs, purge), progress)
    connection = site.state_dir / "connection.json"
    if report.ok and connection.exists():
        connection.unlink()
    return report


def status(engine: Engine, site: Site) -> tuple[dict[tuple[str, str], ServiceState], dict[str, str]]:
    """Observed state of every service, and the hosts that could not be asked."""
    ctxs = contexts(engine, site, site_files(site))
    return engine.service_states(site, services(site, ctxs)), engine.unreachable(site)


def scale_hosts(engine: Engine, site: Site, n: int) -> RunReport:
    """Spread *n* dask workers over the workers group now (``up`` restores the inventory's counts)."""
    hosts = site.group("workers")
    if not hosts:
        raise UserError(f"site '{site.name}' has no workers group to scale")
    counts = {h.name: n // len(hosts) + (i < n % len(hosts)) for i, h in enumerate(hosts)}
    ctxs = contexts(engine, site, site_files(site))
    role = next(r for r in ROLES if r.name == "workers")
    actions = []
    for host in hosts:
        ctx = dataclasses.replace(ctxs[host.name], host=dataclasses.replace(host, workers=counts[host.name]))
        specs = role.services(ctx)
        if specs:
            actions += [Action(host.name, role.name, Service(spec)) for spec in specs]
        else:
            actions += [Action(host.name, role.name, r) for r in role.down(ctxs[host.name])]
    return engine.apply(site, actions)
