"""What ``up``, ``down``, ``plan`` and ``status`` do, as plain functions.

Roles give resources per host; this module turns them into actions, checks
what would clash before anything starts, hands the actions to an engine and
writes the site's connection record. It never prints: callers pass a
progress callback and render the returned reports.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, fields

from deploy import UserError, artifacts, converged, images
from deploy.access import files_entry, redis_entry
from deploy.engine import ActionResult, Engine, Outcome, Progress, RunReport
from deploy.host_shell import CLIENT_PYTHON
from deploy.inventory import Host, Site
from deploy.resources import Absent, Action, AnsibleTasks, Ensure, Service, ServiceSpec, Upload
from deploy.runtime import ServiceState, get_runtime
from deploy.state import SiteFiles, site_files, write_connection
from roles import HostContext, site_roles
from roles.base import IMAGE_PYTHON
from roles import tunnel
from roles.records import records_url


def host_python(host: Host, root: str) -> str:
    """The Python of the pinned environment on *host* (inside the images on apptainer hosts)."""
    if host.python:
        return host.python
    if host.runtime == "apptainer":
        return IMAGE_PYTHON
    if host.is_local:
        return CLIENT_PYTHON
    return f"{root}/venv/bin/python"


def image_folder(site: Site, host: Host, root: str) -> str:
    """Where *host* finds the site's images: the client's build cache on the client,
    the shared filesystem when the site has one (sent once for every host), else
    the host's site folder."""
    if host.is_local:
        return str(images.images_dir())
    if site.settings.paths.shared:
        return f"{site.settings.paths.shared}/{site.name}/images"
    return f"{root}/images"


def _binds(site: Site, host: Host, root: str) -> tuple[str, ...]:
    """Host folders every container of the site sees, at the same paths."""
    paths = [root]
    if host.is_local:
        paths += [str(artifacts.REPO), str(site.project_dir)]
    elif site.settings.paths.shared:
        paths.append(site.settings.paths.shared)
    return tuple(dict.fromkeys(paths))


def contexts(engine: Engine, site: Site, secrets: SiteFiles, shipped: dict | None = None) -> dict[str, HostContext]:
    """Per host: where the site lives there and what it receives."""
    homes = engine.home_dirs(site)
    wanted = {name: images.planned(name) for name in images.IMAGES} if any(h.runtime == "apptainer" for h in site.hosts) else {}
    found = {}
    for host in site.hosts:
        root = site.host_root(host, homes.get(host.name))
        folder = image_folder(site, host, root)
        found[host.name] = HostContext(
            site=site,
            host=host,
            root=root,
            python=host_python(host, root),
            files=secrets.for_host(host.groups),
            artifacts=shipped or {},
            images={name: f"{folder}/{a.path.name}" for name, a in wanted.items()} if host.runtime == "apptainer" else {},
            code=str(artifacts.REPO) if host.is_local else f"{root}/lib",
            binds=_binds(site, host, root),
        )
    return found


def images_used(site: Site, ctxs: dict[str, HostContext]) -> dict[str, list[str]]:
    """Per apptainer host: the images its roles run there."""
    return {
        host.name: sorted({name for role in site_roles(site) if role.applies_to(site, host) for name in role.images(ctxs[host.name])})
        for host in site.hosts
        if host.runtime == "apptainer"
    }


def ship_actions(site: Site, ctxs: dict[str, HostContext], unreachable: dict[str, str] | None = None) -> list[Action]:
    """Each image a remote host runs, sent by content hash, once per place: a shared
    folder gets each image once, from the first reachable host that needs it."""
    unreachable = unreachable or {}
    actions, sent = [], set()
    for host_name, names in images_used(site, ctxs).items():
        ctx = ctxs[host_name]
        if ctx.host.is_local or host_name in unreachable:
            continue
        for name in names:
            path = ctx.images[name]
            if path not in sent:
                sent.add(path)
                actions.append(Action(host_name, "images", Upload(str(images.planned(name).path), path, named_by_content=True)))
    return actions


def ship_images(engine: Engine, site: Site, ctxs: dict[str, HostContext], progress: Progress | None, settled: set[str] = frozenset()) -> RunReport | None:
    """Send the images that are missing, in a run of their own before anything starts.

    Hosts run their actions side by side, so a service on one host must not
    wait for an upload by another within one run; the images go first, in a
    separate engine run (a fresh engine of the same kind), and only when one
    is missing: an unchanged site asks one question per host and sends nothing.
    Hosts in *settled* (converged, see :mod:`deploy.converged`) are neither asked nor sent to.
    """
    wanted = ship_actions(site, ctxs, {**engine.unreachable(site), **{name: converged.FAST for name in settled}})
    if not wanted:
        return None
    by_host: dict[str, list[str]] = {}
    for action in wanted:
        by_host.setdefault(action.host, []).append(action.resource.path)
    missing = engine.missing_files(site, by_host)
    to_send = [a for a in wanted if a.resource.path in missing.get(a.host, ())]
    if not to_send:
        return None
    shipper = type(engine)()
    try:
        return shipper.apply(site, to_send, progress)
    finally:
        shipper.close()


def build_images(site: Site, ctxs: dict[str, HostContext], note: Callable[[str], None]) -> list[str]:
    """Build (or find in the cache) every image the site runs; the names of those built now."""
    built = []
    for name in images.IMAGES:
        if any(name in images.chain(n) for names in images_used(site, ctxs).values() for n in names):
            if not images.planned(name).path.is_file():
                built.append(name)
            images.build(name, note)
    return built


def build_artifacts(site: Site, note: Callable[[str], None]) -> dict:
    """Wheelhouse (for remote hosts running natively) and code bundle, when the site has remote hosts."""
    remote = [h for h in site.hosts if not h.is_local]
    if not remote:
        return {}
    found = {"source": artifacts.source_bundle()}
    if any(h.runtime != "apptainer" for h in remote):
        found["wheelhouse"] = artifacts.wheelhouse(note)
    return found


def _per_role(site: Site, ctxs: dict[str, HostContext], method: str, reverse: bool = False) -> list[tuple[str, str, object]]:
    """(host, role, item) for every item that ``role.<method>(ctx)`` returns, role by role."""
    roles = site_roles(site)[::-1] if reverse else site_roles(site)
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
    # first the record of the last converged up: what follows changes what it vouched for
    actions = [Action(h.name, "site", Absent(converged.record_path(ctxs[h.name].root))) for h in site.hosts]
    actions += [Action(*row) for row in _per_role(site, ctxs, "down", reverse=True)]
    for host in site.hosts:
        runtime = get_runtime(host.runtime)
        leftovers = runtime.leftovers_command(site.name)
        check = f'[ -z "$({leftovers})" ]'
        actions.append(Action(host.name, "site", Ensure("no process of the site left", check, runtime.sweep_command(site.name))))
    if purge:
        actions += [Action(*row) for row in _per_role(site, ctxs, "purge", reverse=True)]
    return actions


def services_by_role(site: Site, ctxs: dict[str, HostContext]) -> list[tuple[str, str, ServiceSpec]]:
    """(host, role, spec) of every service of the site."""
    return _per_role(site, ctxs, "services")


def services(site: Site, ctxs: dict[str, HostContext]) -> list[tuple[str, ServiceSpec]]:
    return [(host, spec) for host, _, spec in services_by_role(site, ctxs)]


def _port_key(site: Site, port: int) -> str:
    if port in {f.local for f in tunnel.forwards(site)} and site.tunnelled:
        return "toppipe.tunnel.offset"
    for field in fields(site.settings.ports):
        if getattr(site.settings.ports, field.name) == port:
            return f"toppipe.ports.{field.name}"
    return "toppipe.ports"


def preflight(engine: Engine, site: Site, ctxs: dict[str, HostContext], settled: set[str] = frozenset()) -> dict[tuple[str, str], ServiceState]:
    """Refuse to start anything when a port a service needs is taken by another program
    (on hosts not in *settled*, whose services all run as wanted)."""
    wanted = [(host, spec) for host, spec in services(site, ctxs) if host not in settled]
    states = engine.service_states(site, wanted) if wanted else {}
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
    """What sessions read: the addresses the client reaches (the tunnel's local ends on a
    tunnelled site), its TLS files, the services, and provenance of the deployment."""
    settings = site.settings
    ctx = ctxs[site.scheduler_host.name]
    client = site.state_dir
    workers = site.group("workers")
    scheduler, dashboard = ctx.scheduler_address, f"http://{settings.bind}:{settings.ports.dashboard}/status"
    records = records_url(ctxs[site.client_host.name], ctxs[site.group("db")[0].name])
    if site.tunnelled:
        ends = {f.name: f.local for f in tunnel.forwards(site)}
        scheduler, dashboard = f"tls://{tunnel.LOOPBACK}:{ends['scheduler']}", f"http://{tunnel.LOOPBACK}:{ends['dashboard']}/status"
        if "postgres" in ends:
            records = records_url(ctxs[site.client_host.name], through=tunnel.LOOPBACK, port=ends["postgres"])
    record = {
        "inventory": str(site.inventory.parent.resolve()),
        "reach": "tunnel" if site.tunnelled else "direct",
        "scheduler": scheduler,
        "dashboard": dashboard,
        "jupyter": f"http://{settings.bind}:{settings.ports.jupyter}/lab",
        "jupyter_token_file": str(client / "secrets" / "jupyter_token"),
        "app": f"http://{settings.bind}:{settings.ports.app}/",
        "app_token_file": str(client / "secrets" / "dashboard_token"),
        "tls": {"ca": str(client / "tls/ca.pem"), "cert": str(client / "tls/client.pem"), "key": str(client / "tls/client.key")},
        "records": records,
        "services": [{"host": host, "name": spec.name, "ports": tunnel.client_ports(site, host, spec.ports)} for host, spec in services(site, ctxs)],
        "hosts": {h.name: h.address for h in site.hosts},
        # pipeline runs: where workers keep results and find the user's project, and provenance
        "results": results_folder(site, ctxs),
        "project": (ctxs[workers[0].name].project if workers else None),
        "project_local": str(site.project_dir),
        "images": {name: images.digest(name) for names in images_used(site, ctxs).values() for name in names},
        "redis": redis_entry(site),  # session.store
    }
    record["files"] = files_entry(site, record["results"])  # session.fs
    if site.tunnelled:
        record["tunnel"] = {f.name: f"{tunnel.LOOPBACK}:{f.local} -> {f.remote}:{f.port}" for f in tunnel.forwards(site)}
    record["deployment"] = hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return record


def results_folder(site: Site, ctxs: dict[str, HostContext]) -> str:
    """Where task results are cached: the shared filesystem, else the first worker host's site folder."""
    if site.settings.paths.shared:
        return f"{site.settings.paths.shared}/{site.name}/results"
    workers = site.group("workers") or site.group("client")
    return ctxs[workers[0].name].path("results")


def probed_actions(site: Site, ctxs: dict[str, HostContext], actions: list[Action]) -> dict[str, list[Action]]:
    """Per host, what its fast-path probe checks and its record vouches for: each image it runs
    (whichever host sends it) and its actions."""
    by_host: dict[str, list[Action]] = {host.name: [] for host in site.hosts}
    for host_name, names in images_used(site, ctxs).items():
        ctx = ctxs[host_name]
        if not ctx.host.is_local:
            by_host[host_name] += [Action(host_name, "images", Upload(str(images.planned(n).path), ctx.images[n], named_by_content=True)) for n in names]
    for action in actions:
        by_host[action.host].append(action)
    return {name: found for name, found in by_host.items() if found}


def assess(engine: Engine, site: Site, ctxs: dict[str, HostContext], by_host: dict[str, list[Action]], full: bool = False) -> dict[str, converged.Verdict]:
    """Each host's verdict from one probe per host, all side by side (no answer: the full run).
    With *full* no host is probed: each runs in full."""
    if full:
        return {name: converged.Verdict(name, [converged.ASKED], had_record=True) for name in by_host}
    outputs = engine.run_scripts(site, {name: converged.probe_script(site, ctxs[name].root, found) for name, found in by_host.items()})
    if outputs is None:
        return {name: converged.Verdict(name, [f"the {engine.name} engine cannot probe hosts"]) for name in by_host}
    return {name: converged.judge(name, found, outputs.get(name)) for name, found in by_host.items()}


def explain(verdicts: dict[str, converged.Verdict], by_host: dict[str, list[Action]], note: Callable[[str], None]) -> None:
    """One line per host: converged, or why it runs in full; then whether each of its Ansible roles runs, and why."""
    for name, verdict in sorted(verdicts.items()):
        if verdict.converged:
            note(f"{name}: {converged.FAST}")
            continue
        more = f" (and {len(verdict.reasons) - 1} more)" if len(verdict.reasons) > 1 else ""
        note(f"{name}: full run: {verdict.reasons[0]}{more}")
        for role in dict.fromkeys(a.resource.role for a in by_host.get(name, []) if isinstance(a.resource, AnsibleTasks)):
            if verdict.role_runs(role):
                note(f"{name}: ansible role {role} runs: {verdict.ansible.get(role, verdict.reasons[0])}")
            else:
                note(f"{name}: ansible role {role} {converged.ROLE_IN_PLACE}")


def settled_results(actions: list[Action], verdicts: dict[str, converged.Verdict]) -> list[ActionResult]:
    """Unchanged, without running them: every action of a converged host, and the Ansible roles
    of the other hosts whose inputs are unchanged and whose managed paths did not drift."""
    found = []
    for action in actions:
        verdict, role = verdicts.get(action.host), action.resource
        if verdict is None:
            continue
        if verdict.converged:
            why = f"not run: inputs unchanged, no drift; {converged.FAST}" if isinstance(role, AnsibleTasks) else converged.FAST
            found.append(ActionResult(action, Outcome.UNCHANGED, why))
        elif isinstance(role, AnsibleTasks) and not verdict.role_runs(role.role):
            found.append(ActionResult(action, Outcome.UNCHANGED, converged.ROLE_IN_PLACE))
    return found


def _remember(engine: Engine, site: Site, ctxs: dict[str, HostContext], report: RunReport, by_host: dict[str, list[Action]], verdicts: dict[str, converged.Verdict]) -> None:
    """Write the record of each host that ran in full and converged, with what its Ansible roles manage."""
    ok = {name for name in by_host if name not in report.unreachable}
    for result in report.results:
        if result.outcome not in (Outcome.CHANGED, Outcome.UNCHANGED):
            ok.discard(result.action.host)
    managed = engine.managed_paths(site)
    scripts = {}
    for name in ok:
        verdict, roles = verdicts[name], {}
        for action in by_host[name]:
            r = action.resource
            if not isinstance(r, AnsibleTasks):
                continue
            before = verdict.before.get(r.role)
            ran = verdict.role_runs(r.role)
            roles[r.role] = converged.role_entry(r, managed.get(name, {}).get(r.role, []), before) if ran else before
        scripts[name] = converged.write_script(ctxs[name].root, converged.record(by_host[name], roles))
    if scripts:
        engine.run_scripts(site, scripts)


def up(engine: Engine, site: Site, progress: Progress | None = None, note: Callable[[str], None] = lambda _: None, full: bool = False) -> UpResult:
    """Bring the site to its inventory's state: hosts found converged (one probe each, see
    :mod:`deploy.converged`) are left alone, the others run every action but the Ansible roles
    whose inputs are unchanged and whose managed paths did not drift; *full*: all of them, in full."""
    secrets = site_files(site)
    ctxs = contexts(engine, site, secrets, build_artifacts(site, note))
    actions = up_actions(site, ctxs)
    by_host = probed_actions(site, ctxs, actions)
    verdicts = assess(engine, site, ctxs, by_host, full)
    explain(verdicts, by_host, note)
    settled = {name for name, verdict in verdicts.items() if verdict.converged}
    preflight(engine, site, ctxs, settled)
    build_images(site, ctxs, note)
    secrets.save(site)
    forget = {name: converged.forget_script(ctxs[name].root) for name, v in verdicts.items() if v.had_record and not v.converged}
    if forget:  # a full run that stops half way must not leave a record vouching for the host
        engine.run_scripts(site, forget)
    fast = settled_results(actions, verdicts)
    for result in fast:
        if progress:
            progress(result)
    shipped = ship_images(engine, site, ctxs, progress, settled)
    held = {id(result.action) for result in fast}
    todo = [a for a in actions if id(a) not in held]
    # an agent in an allocation is found through the scheduler file its job writes: its tunnel
    # starts in a run of its own, once the run that submits the job has ended
    following = [a for a in todo if a.role == "tunnel"] if site.agent_in_allocation else []
    first, then = waves(site, [a for a in todo if a not in following], verdicts)
    report = engine.apply(site, first, progress) if first else RunReport(unreachable=engine.unreachable(site))
    if then is not None:
        then, replaced = after_scheduler(site, actions, then, report, note)
        report.results = [r for r in report.results if id(r.action) not in replaced]
        fast = [r for r in fast if id(r.action) not in replaced]
        if then:
            report.results += apply_apart(engine, site, then, progress)
    if following:
        report.results += follow_agent(engine, site, following, report, progress)
    if shipped is not None:  # an image that failed to arrive also fails the services that need it, by name
        report.results[:0] = shipped.results
    _remember(engine, site, ctxs, report, {name: found for name, found in by_host.items() if name not in settled}, verdicts)
    report.results[:0] = fast
    record = connection_record(site, ctxs)
    if report.ok:
        write_connection(site, record)
    return UpResult(report, record)


def waves(site: Site, actions: list[Action], verdicts: dict[str, converged.Verdict]) -> tuple[list[Action], list[Action] | None]:
    """*actions* in the runs that apply them: all in one (and None), or, when the running scheduler
    may start again, its host's first and the other hosts' then. dask workers end with the scheduler
    they joined: started beside the new one, they would join the one about to stop."""
    host = site.scheduler_host.name
    verdict = verdicts.get(host)
    if verdict is None or not ("scheduler" in verdict.restarts or converged.ASKED in verdict.reasons):
        return actions, None
    return [a for a in actions if a.host == host], [a for a in actions if a.host != host]


def after_scheduler(site: Site, actions: list[Action], then: list[Action], report: RunReport,
                    note: Callable[[str], None]) -> tuple[list[Action], set[int]]:
    """The run after the scheduler's host's (*report*): *then*, and, if the scheduler was restarted,
    every service that ends with it started again unless its host's run just started it (they
    joined the old one). Also the ids of the actions whose results the restarts replace."""
    host = site.scheduler_host.name
    outcomes = {id(r.action): r.outcome for r in report.results}
    scheduler = next((a for a in actions if a.host == host and isinstance(a.resource, Service) and a.resource.spec.name == "scheduler"), None)
    if scheduler is None or outcomes.get(id(scheduler)) is not Outcome.CHANGED:
        return then, set()  # not restarted, or refused: the old scheduler and its workers run on
    planned = {id(a) for a in then}
    restarts, replaced = {}, set()
    for action in actions:
        r = action.resource
        if not (isinstance(r, Service) and r.running and r.spec.ends_with_scheduler):
            continue
        if action.host == host and outcomes.get(id(action)) is not Outcome.UNCHANGED:
            continue  # started after the scheduler in its host's run, or failed there
        restarts[id(action)] = Action(action.host, action.role, dataclasses.replace(r, restart=True))
        if id(action) not in planned:
            replaced.add(id(action))
    if restarts:
        note(f"{', '.join(f'{a.host}/{a.resource.spec.name}' for a in restarts.values())}: start again, the scheduler was restarted")
    found = [restarts.get(id(a), a) for a in then]
    return found + [a for key, a in restarts.items() if key not in planned], replaced


def apply_apart(engine: Engine, site: Site, actions: list[Action], progress: Progress | None) -> list:
    """The results of *actions* applied in a run of their own, by an engine of *engine*'s kind."""
    separate = type(engine)()
    try:
        return separate.apply(site, actions, progress).results
    finally:
        separate.close()


def follow_agent(engine: Engine, site: Site, actions: list[Action], before: RunReport, progress: Progress | None) -> list:
    """The tunnel to an agent in an allocation, started after the run that submitted its job
    (skipped when that run did not converge)."""
    if not before.ok:
        return [ActionResult(a, Outcome.SKIPPED, "not run: the site agent's job was not submitted") for a in actions]
    return apply_apart(engine, site, actions, progress)


def plan(engine: Engine, site: Site, full: bool = False, note: Callable[[str], None] = lambda _: None) -> RunReport:
    """What ``up`` would change, by the same path: converged hosts from their probe, the others
    (and the Ansible roles that would run) in check mode; *note* says which and why, as ``up`` does."""
    ctxs = contexts(engine, site, site_files(site), build_artifacts(site, lambda _: None))
    actions = up_actions(site, ctxs)
    by_host = probed_actions(site, ctxs, actions)
    verdicts = assess(engine, site, ctxs, by_host, full)
    explain(verdicts, by_host, note)
    settled = {name for name, verdict in verdicts.items() if verdict.converged}
    skip = {**engine.unreachable(site), **{name: converged.FAST for name in settled}}
    fast = settled_results(actions, verdicts)
    held = {id(result.action) for result in fast}
    todo = ship_actions(site, ctxs, skip) + [a for a in actions if id(a) not in held]
    report = engine.plan(site, todo) if todo else RunReport(unreachable=engine.unreachable(site))
    report.results[:0] = fast
    return report


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


def add_host_workers(engine: Engine, site: Site, pool_name: str, added: dict[str, list[int]]) -> RunReport:
    """Start added workers of the hosts pool *pool_name*: on each host, the services ``<service>.<k>``
    for each k of *added* (see :mod:`roles.workers`); the pool's other workers are not touched."""
    from roles.workers import EXTRA_PER_HOST, extra_name, worker_count

    try:
        pool = site.pool(pool_name)
    except KeyError:
        raise UserError(f"site '{site.name}' has no pool '{pool_name}'; its pools: {', '.join(p.name for p in site.pools)}") from None
    if pool.kind != "hosts":
        raise UserError(f"pool '{pool_name}' runs Slurm jobs, which the site agent starts; it is not a hosts pool")
    ctxs = contexts(engine, site, site_files(site))
    role = next(r for r in site_roles(site) if r.name == "workers")
    actions = []
    for host, indices in added.items():
        first = worker_count(ctxs[host], pool) + 1
        for k in indices:
            if not first <= k < first + EXTRA_PER_HOST:
                raise UserError(f"pool '{pool_name}' can run at most {EXTRA_PER_HOST} workers on {host} beyond the inventory's {first - 1}; raise per_host there")
            spec = role.pool_service(ctxs[host], pool, extra_name(pool, k), 1)
            actions.append(Action(host, role.name, Service(spec)))
    return engine.apply(site, actions)
