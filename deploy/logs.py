"""The logs of a site's services and Slurm workers, read where they are written.

A target names one log: a service (``scheduler``), a host's service
(``node1/workers``), a dask worker by name or address (its host's ``workers``
log, or its Slurm job's), or a Slurm job id. Services write ``<rundir>/log``
(both runtimes; rotated at start, see :func:`deploy.runtime.shell.rotate_log`);
a Slurm worker's job writes ``<slurm workdir>/logs/<job name>-<job id>.err``
(dask-jobqueue's ``log_directory``, on the shared filesystem). Logs are read
with ``tail`` on their host, over the same ssh connections as the checks
(:class:`deploy.checks.hosts.Connections`, jumps included).
"""

from __future__ import annotations

import re
import secrets
import shlex
import subprocess
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from deploy import DeployError, UserError, host_shell
from deploy.inventory import Site
from deploy.resources import ServiceSpec

LOG_NAME = "log"


@dataclass(frozen=True)
class LogTarget:
    """One log file on one host, and how to call it."""

    label: str
    host: str
    path: str


@dataclass(frozen=True)
class Worker:
    """What a log target needs to know of a dask worker."""

    name: str
    address: str
    host: str
    slurm_job: str | None = None


def service_log(spec: ServiceSpec) -> str:
    """Where a service's output goes (both runtimes)."""
    return f"{spec.rundir}/{LOG_NAME}"


def slurm_log_dir(site: Site, scheduler_root: str) -> str:
    """Where Slurm workers' jobs write their output: the agent's Slurm work folder
    (``roles/scheduler``: ``<shared or the scheduler host's site folder>/<site>/slurm``) + ``/logs``."""
    shared = site.settings.paths.shared or scheduler_root
    return f"{shared}/{site.name}/slurm/logs"


def slurm_job_log(site: Site, scheduler_root: str, job: str) -> str:
    """The output of Slurm job *job* (dask-jobqueue's ``<job name>-<job id>.err``, the agent's job name)."""
    return f"{slurm_log_dir(site, scheduler_root)}/toppipe-{site.name}-{job}.err"


def targets(services: Iterable[tuple[str, ServiceSpec]]) -> list[str]:
    """The names a user can give: each service, alone when it runs on one host, and ``host/service``."""
    services = list(services)
    hosts_of: dict[str, list[str]] = {}
    for host, spec in services:
        hosts_of.setdefault(spec.name, []).append(host)
    alone = [name for name, hosts in hosts_of.items() if len(hosts) == 1]
    return alone + [f"{host}/{spec.name}" for host, spec in services]


def is_job_id(target: str) -> bool:
    """A Slurm job id (``123456``, or an array task ``123456_7``)."""
    return re.fullmatch(r"\d+(_\d+)?", target) is not None


def resolve(
    target: str,
    services: Iterable[tuple[str, ServiceSpec]],
    workers: Iterable[Worker] = (),
    slurm_log: Callable[[str], tuple[str, str]] | None = None,
) -> LogTarget:
    """The log *target* names, or :class:`UserError` (one line naming the known targets).

    *services* are (host, spec) of the site; *workers* the connected dask
    workers (may be empty when the scheduler is not asked); *slurm_log* maps a
    job id to ``(host, path)``, None on a site without Slurm.
    """
    services = list(services)
    host, _, name = target.rpartition("/")
    found = [(h, s) for h, s in services if s.name == name and (not host or h == host)]
    if len(found) == 1:
        h, spec = found[0]
        return LogTarget(f"{h}/{spec.name}", h, service_log(spec))
    if len(found) > 1:
        raise UserError(f"{target} runs on {len(found)} hosts; name one: {', '.join(f'{h}/{s.name}' for h, s in found)}")
    for worker in workers:
        if target in (worker.name, worker.address):
            if worker.slurm_job and slurm_log is not None:
                return _job_target(worker.slurm_job, slurm_log, f"worker {worker.name}")
            return resolve(f"{worker.host}/workers", services, (), None)
    if slurm_log is not None and is_job_id(target):
        return _job_target(target, slurm_log, f"slurm job {target}")
    known = targets(services) + ["a worker's name or address"] + (["a Slurm job id"] if slurm_log else [])
    raise UserError(f"no log named {target!r}; known targets: {', '.join(known)}")


def _job_target(job: str, slurm_log, label: str) -> LogTarget:
    host, path = slurm_log(job)
    return LogTarget(label, host, path)


def site_services(engine, site: Site) -> tuple[list[tuple[str, ServiceSpec]], Callable[[str], tuple[str, str]] | None]:
    """The site's (host, spec) services, from its roles, and where a Slurm job's log is: on the
    scheduler host when it is a Slurm host (None on a site without Slurm)."""
    from deploy import lifecycle
    from deploy.state import site_files

    ctxs = lifecycle.contexts(engine, site, site_files(site))
    scheduler = site.scheduler_host
    slurm_log = None
    if "slurm" in scheduler.groups:

        def slurm_log(job: str) -> tuple[str, str]:
            return scheduler.name, slurm_job_log(site, ctxs[scheduler.name].root, job)

    return lifecycle.services(site, ctxs), slurm_log


def locate(engine, site: Site, target: str, workers: Iterable[Worker] = ()) -> LogTarget:
    """The log *target* names on *site* (see :func:`resolve`); an agent inside a Slurm allocation
    logs to the shared folder, read on the scheduler host."""
    scheduler = site.scheduler_host.name
    if site.agent_in_allocation and target in ("scheduler", f"{scheduler}/scheduler"):
        from roles.scheduler.allocation import agent_log

        return LogTarget(f"{scheduler}/scheduler (its Slurm job)", scheduler, agent_log(site))
    services, slurm_log = site_services(engine, site)
    return resolve(target, services, workers, slurm_log)


def tail_command(path: str, lines: int, follow: bool = False) -> str:
    """Bash printing the last *lines* of *path* (and, with *follow*, what is appended until stopped)."""
    if lines < 0:
        raise UserError(f"-n must be 0 or more, not {lines}")
    quoted = shlex.quote(path)
    if follow:  # -F: keep following across a rotation at the service's next start
        return f"exec tail -n {lines} -F {quoted} 2>/dev/null"
    return f'if [ -f {quoted} ]; then tail -n {lines} {quoted}; else echo "no log yet at {quoted}" >&2; exit 3; fi'


def _connections(site: Site, host: str):
    from deploy.checks.hosts import Connections
    from deploy.inventory import jumps

    return Connections([site.host(host)], jumps.ssh_config(site))


def read(site: Site, target: LogTarget, lines: int) -> str:
    """The last *lines* of *target*'s log; :class:`DeployError` if its host cannot be asked or has none."""
    from deploy.checks.hosts import Unreachable

    token = f"toppipe-logs-{secrets.token_hex(4)}"
    with _connections(site, target.host) as conns:
        try:
            section = conns.batch(target.host, {"tail": tail_command(target.path, lines)}, token)["tail"]
        except Unreachable as exc:
            raise DeployError(f"cannot read the log of {target.label}: host {target.host} is unreachable ({exc})") from None
    if not section.ok:
        raise DeployError(f"{target.label}: {section.output.splitlines()[-1] if section.output else 'tail failed'}")
    return section.output


def follow(site: Site, target: LogTarget, lines: int) -> Iterator[str]:
    """The last *lines* of *target*'s log, then each line appended to it, until the iterator is closed."""
    from deploy.checks.hosts import Unreachable

    command = tail_command(target.path, lines, follow=True)
    with _connections(site, target.host) as conns:
        if site.host(target.host).is_local:
            argv = host_shell.argv(command)
        else:
            try:  # opens the master connection that the follower reuses
                conns.batch(target.host, {"ready": "true"}, f"toppipe-logs-{secrets.token_hex(4)}")
            except Unreachable as exc:
                raise DeployError(f"cannot follow the log of {target.label}: host {target.host} is unreachable ({exc})") from None
            argv = conns.command_argv(target.host, command)
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, errors="replace")
        try:
            for line in proc.stdout:
                yield line.rstrip("\n")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
