"""Run every check of a site, concurrently over its hosts, in a few rounds.

Rounds: ssh hosts say where their home is (which also proves they answer);
one batch per host (services, pinned versions, free disk, Slurm, a file in
the shared folder); with a shared folder, the reads and then the clean-up.
The scheduler's TLS is probed from this machine meanwhile (through the
tunnel on a site reached through ssh), and every socket of the site's
beyond loopback once the hosts have listed theirs: from this machine, or
from the gateway host on a site reached through ssh.
"""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from deploy import lifecycle
from deploy.checks import exposure, probes, shared
from deploy.checks.hosts import Connections, Section, Unreachable
from deploy.checks.results import CheckReport, CheckResult
from deploy.checks.tls import scheduler_tls_checks
from deploy.inventory import Site, jumps
from deploy.logs import service_log
from deploy.resources import ServiceSpec
from deploy.runtime import ApptainerRuntime, runtime_for
from deploy.state import SiteFiles
from roles import HostContext

PINS_FILE = Path(__file__).resolve().parents[2] / "requirements.txt"
#: Groups whose hosts must run the pinned versions.
VERSIONED_GROUPS = ("client", "scheduler", "workers")

Outputs = dict[str, dict[str, Section]]


class _KnownHomes:
    """Stands in for the engine in :func:`lifecycle.contexts`: home folders read over the checks' connections."""

    def __init__(self, homes: dict[str, str]):
        self.homes = homes

    def home_dirs(self, site: Site) -> dict[str, str]:
        return self.homes


def _round(pool: ThreadPoolExecutor, conns: Connections, plans: dict[str, dict[str, str]], token: str) -> tuple[Outputs, dict[str, str]]:
    """Each host's batch at once; the outputs, and why the hosts that failed to answer did not."""
    futures = {host: pool.submit(conns.batch, host, sections, token) for host, sections in plans.items() if sections}
    outputs, unreachable = {}, {}
    for host, future in futures.items():
        try:
            outputs[host] = future.result()
        except Unreachable as exc:
            unreachable[host] = str(exc)
    return outputs, unreachable


def _batch(site: Site, ctx: HostContext, specs: list[ServiceSpec], token: str) -> dict[str, str]:
    """The commands of one host's main round, by section name."""
    host = ctx.host
    sections = {f"service {spec.name}": probes.service_script(runtime_for(host, spec).status_command(spec), service_log(spec)) for spec in specs}
    if set(host.groups) & set(VERSIONED_GROUPS):
        sections["versions"] = probes.versions_script(ctx.python, ctx, _image_of(host))
    if ctx.in_containers and any(spec.image for spec in specs):
        sections["images"] = ApptainerRuntime().instance_list_command(site.name)
    sections["disk"] = probes.disk_script(ctx.root)
    sections[exposure.CHECK] = exposure.LISTING_SCRIPT
    if site.settings.paths.shared and "workers" in host.groups:
        sections["shared write"] = shared.write_script(shared.marker_path(site.settings.paths.shared, site.name, host.name, token), token)
    if "slurm" in host.groups:
        sections["slurm"] = probes.SLURM_SCRIPT
    if site.agent_in_allocation and host.name == site.scheduler_host.name:
        from roles.scheduler.allocation import job_name

        sections["agent job"] = probes.agent_job_script(job_name(site))
    return sections


def _listener_check(site: Site, ctx: HostContext, specs: list[ServiceSpec], out: dict[str, Section], connect: exposure.Connect) -> CheckResult:
    """The site's sockets on the host beyond loopback, each probed without credentials (this machine's
    own from here, the others' over *connect*)."""
    ports = {port for spec in specs for _, port in spec.ports}
    via = exposure.direct if ctx.host.is_local else connect
    return exposure.listener_check(ctx.host.name, ctx.host.address, out[exposure.CHECK], site.name, ports, via)


def _prober(site: Site, conns: Connections, outputs: Outputs) -> exposure.SshForwards | None:
    """On a site reached through ssh, connections made by its gateway (the tunnel's end): this
    machine may not reach the hosts, and the site's own network is where strangers are."""
    gateway = site.scheduler_host
    if not site.tunnelled or gateway.is_local or gateway.name not in outputs:
        return None
    return exposure.SshForwards(lambda address, port: conns.forward_argv(gateway.name, address, port))


def _image_of(host) -> str:
    """The image whose Python the versions check asks on an apptainer host."""
    return "client" if "client" in host.groups else "scheduler" if "scheduler" in host.groups else "compute"


def _judge(
    ctx: HostContext, out: dict[str, Section], specs: list[ServiceSpec], roles: dict[tuple[str, str], str], pins: dict[str, str], min_free: int
) -> list[CheckResult]:
    """Services, versions and disk of one host from its main round's output."""
    name = ctx.host.name
    results = [probes.judge_service(name, roles[(name, spec.name)], spec.name, out[f"service {spec.name}"]) for spec in specs]
    if "versions" in out:
        results.append(probes.judge_versions(name, ctx.python, out["versions"], pins))
    if "images" in out:
        results.append(probes.judge_images(name, ctx.site.name, out["images"], specs))
    results.append(probes.judge_disk(name, ctx.root, out["disk"], min_free))
    return results


def _shared_checks(site: Site, pool: ThreadPoolExecutor, conns: Connections, outputs: Outputs, token: str) -> dict[str, CheckResult]:
    """Workers' files read by the other workers, then removed; a result per host.

    Only the hosts that mount the folder are asked: the workers (the client too when it is
    one). A client that is not a worker does not see a real site's shared folder.
    """
    folder = site.settings.paths.shared
    path = {host: shared.marker_path(folder, site.name, host, token) for host in outputs}
    writers = [host for host, out in outputs.items() if "shared write" in out]
    written = [host for host in writers if outputs[host]["shared write"].ok]
    readers = [h.name for h in site.hosts if h.name in outputs and "workers" in h.groups]
    plans = {r: {w: shared.read_script(path[w]) for w in written if w != r} for r in readers}
    reads, unreachable = _round(pool, conns, plans, token)
    _round(pool, conns, {w: {"remove": shared.remove_script(path[w])} for w in written}, token)
    results = {}
    for host in readers:
        if host in unreachable:
            results[host] = CheckResult(host, "site", shared.CHECK, False, f"cannot connect: {unreachable[host]}")
            continue
        wrote = outputs[host].get("shared write")
        results[host] = shared.judge_shared(host, folder, wrote, reads.get(host, {}), token)
    return results


def run_checks(site: Site, min_free: int = probes.MIN_FREE_BYTES) -> CheckReport:
    """Every check of *site*, in host order; never raises for a host that does not answer."""
    token = secrets.token_hex(8)
    pins = probes.read_pins(PINS_FILE.read_text())
    by_host: dict[str, list[CheckResult]] = {h.name: [] for h in site.hosts}
    with Connections(site.hosts, jumps.ssh_config(site)) as conns, ThreadPoolExecutor(len(site.hosts) + 1) as pool:
        tls = pool.submit(scheduler_tls_checks, site)
        homes, unreachable = _round(pool, conns, {h.name: {"home": 'echo "$HOME"'} for h in site.hosts if not h.is_local}, token)
        ctxs = lifecycle.contexts(_KnownHomes({h: out["home"].output for h, out in homes.items()}), site, SiteFiles({}, created=False))
        specs: dict[str, list[ServiceSpec]] = {h.name: [] for h in site.hosts}
        for host, spec in lifecycle.services(site, ctxs):
            specs[host].append(spec)
        plans = {h.name: _batch(site, ctxs[h.name], specs[h.name], token) for h in site.hosts if h.name not in unreachable}
        outputs, lost = _round(pool, conns, plans, token)
        unreachable.update(lost)
        roles = {(host, spec.name): role for host, role, spec in lifecycle.services_by_role(site, ctxs)}
        prober = _prober(site, conns, outputs)
        connect = prober or exposure.direct
        listeners = {host: pool.submit(_listener_check, site, ctxs[host], specs[host], out, connect) for host, out in outputs.items()}
        for host, out in outputs.items():
            by_host[host] = _judge(ctxs[host], out, specs[host], roles, pins, min_free)
        scheduler = site.scheduler_host.name
        after_services = len(specs[scheduler])
        by_host[scheduler][after_services:after_services] = tls.result()
        if site.settings.paths.shared:
            for host, result in _shared_checks(site, pool, conns, outputs, token).items():
                by_host[host].append(result)
        for host, out in outputs.items():
            if "slurm" in out:
                by_host[host].append(probes.judge_slurm(host, out["slurm"]))
            if "agent job" in out:
                by_host[host].append(probes.judge_agent_job(host, out["agent job"]))
            by_host[host].append(listeners[host].result())  # every forward has ended: the probes close their sockets
        if prober:
            prober.close()
    for host, why in unreachable.items():
        by_host[host] = [CheckResult(host, "site", "connect", False, f"cannot connect: {why}")]
    return CheckReport(tuple(result for h in site.hosts for result in by_host[h.name]))
