"""The typed, frozen picture of a site that everything downstream reads.

Settings live under the ``toppipe`` key of ``group_vars/all.yml``; host
variables prefixed ``toppipe_`` override them per host. Precedence, highest
first: host variables > group variables > site settings > these defaults.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from deploy.inventory import values
from toppipe.pool_resources import marker, worker_offer

Runtime = Literal["native", "apptainer"]
Connection = Literal["local", "ssh"]
#: How the client reaches the site's services: through one ssh tunnel to the scheduler host, or directly.
Reach = Literal["tunnel", "direct"]
#: Where the site agent (the scheduler and the Slurm job submission) runs: as a service on
#: the scheduler group's host, or inside a Slurm allocation on a compute node.
Placement = Literal["host", "allocation"]
#: What runs a pool's workers: Slurm jobs, or services on ssh hosts.
PoolKind = Literal["slurm", "hosts"]

#: Groups every site has, each with how many hosts it may hold (None: any).
REQUIRED_GROUPS = {"client": 1, "scheduler": 1, "workers": None, "db": 1}
#: Groups a site may have in addition.
OPTIONAL_GROUPS = {"slurm": None}
KNOWN_GROUPS = {**REQUIRED_GROUPS, **OPTIONAL_GROUPS}

#: The metadata key of a field's value rule (see :mod:`deploy.inventory.values`).
RULE = "rule"


def checked(rule: values.Rule, default=dataclasses.MISSING):
    """A field whose value *rule* checks (and may make canonical) at load."""
    return field(default=default, metadata={RULE: rule})


@dataclass(frozen=True)
class Ports:
    """TCP ports of the site's services (each one distinct, checked by the loader)."""

    scheduler: int = checked(values.port, 8786)
    dashboard: int = checked(values.port, 8787)
    jupyter: int = checked(values.port, 8888)
    app: int = checked(values.port, 8050)  # the site dashboard (toppipe.dashboard) on the client
    postgres: int = checked(values.port, 5432)  # the run records on the db host (apptainer sites)
    redis: int = checked(values.port, 6379)


@dataclass(frozen=True)
class TunnelSettings:
    """The client's tunnel to a site reached through ssh (``reach: tunnel``).

    Each forwarded service listens on the client's loopback at its site port
    plus ``offset`` (scheduler 8786 -> 18786, dashboard 8787 -> 18787,
    PostgreSQL 5432 -> 15432, Redis 6379 -> 16379), clear of the site's own
    ports and of a local site's. Two tunnelled sites up at once need different
    offsets; the loader checks that every local end is a port and none is the
    client's Jupyter or site dashboard port.
    """

    offset: int = checked(values.at_least(0, ""), 10000)


@dataclass(frozen=True)
class WorkerSettings:
    """How dask workers are started on each host of the workers group."""

    per_host: int = checked(values.at_least(0, ""), 2)
    threads: int = checked(values.at_least(1, "threads cannot run a worker"), 1)
    memory: str = checked(values.memory, "2GiB")


@dataclass(frozen=True)
class SlurmSettings:
    """Dask workers inside Slurm allocations (sites with a ``slurm`` group)."""

    partition: str | None = checked(values.slurm_name, None)
    account: str | None = checked(values.slurm_name, None)
    walltime: str = checked(values.walltime, "01:00:00")  # made [D-]HH:MM:SS at load
    cores: int = checked(values.at_least(1, "cores cannot run a job"), 1)
    memory: str = checked(values.memory, "2GiB")
    # 0 would be a Slurm site that never runs a job: leave out the slurm group instead
    max_jobs: int = checked(values.at_least(1, "jobs would never run a worker (for none, leave out the slurm group)"), 8)


@dataclass(frozen=True)
class PoolSettings:
    """One entry of ``toppipe.pools`` as written: a named kind of worker.

    A ``slurm`` pool's workers run in jobs the agent submits (partition, account, qos, gres,
    constraint, job_directives, cores and processes per job, local_scratch, max_jobs); a
    ``hosts`` pool's run as services on its ``hosts`` (groups or hosts), ``per_host`` each.
    ``resources`` is what each worker offers to tasks as dask resources (``GPU: 1``). The
    loader checks that each key fits the pool's kind (:class:`Pool` is the checked result).
    """

    kind: PoolKind
    threads: int | None = checked(values.at_least(1, "threads cannot run a worker"), None)
    memory: str | None = checked(values.memory, None)
    # slurm
    partition: str | None = checked(values.slurm_name, None)
    account: str | None = checked(values.slurm_name, None)
    qos: str | None = checked(values.slurm_name, None)
    walltime: str | None = checked(values.walltime, None)
    cores: int | None = checked(values.at_least(1, "cores cannot run a job"), None)
    processes: int | None = checked(values.at_least(1, "processes cannot run a worker"), None)
    gres: str | None = checked(values.gres, None)
    constraint: str | None = None
    job_directives: tuple[str, ...] = ()
    local_scratch: bool | None = None
    max_jobs: int | None = checked(values.at_least(1, "jobs would never run a worker (for none, leave the pool out)"), None)
    # hosts
    hosts: tuple[str, ...] = ()
    per_host: int | None = checked(values.at_least(0, ""), None)
    resources: tuple[tuple[str, float], ...] = ()  # written as a mapping: the loader builds it


#: The keys that only one kind of pool takes.
SLURM_POOL_KEYS = ("partition", "account", "qos", "walltime", "cores", "processes", "gres", "constraint",
                   "job_directives", "local_scratch", "max_jobs")  # fmt: skip
HOST_POOL_KEYS = ("hosts", "per_host", "threads")  # a Slurm job's workers have cores / processes threads
#: The default pools' names when ``toppipe.pools`` is not written: the workers group and the slurm settings.
DEFAULT_HOST_POOL = "hosts"
DEFAULT_SLURM_POOL = "slurm"
#: Resource names toppipe gives every worker: its pool's (``pool:<name>``) and its kind's.
RESERVED_RESOURCES = ("host", "slurm")


@dataclass(frozen=True)
class Pool:
    """A checked pool: every value set (defaults from ``workers`` and ``slurm``), hosts resolved."""

    name: str
    kind: PoolKind
    threads: int
    memory: str
    resources: tuple[tuple[str, float], ...] = ()
    # slurm
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    walltime: str = "01:00:00"
    cores: int = 1
    processes: int = 1
    gres: str | None = None
    constraint: str | None = None
    job_directives: tuple[str, ...] = ()
    local_scratch: bool = False
    max_jobs: int = 8
    # hosts: (host, workers) for each of its hosts
    hosts: tuple[tuple[str, int], ...] = ()

    @property
    def marker(self) -> str:
        """The dask resource every worker of this pool has, and a task placed on it asks for."""
        return marker(self.name)

    def worker_resources(self) -> dict[str, float]:
        """What each worker of the pool offers: its pool and kind (one per thread) and the pool's own."""
        return worker_offer(self.name, self.kind, self.threads, dict(self.resources))

    @property
    def service(self) -> str:
        """The name of a hosts pool's service on each of its hosts (``workers`` for the default pool)."""
        return "workers" if self.name == DEFAULT_HOST_POOL else f"workers-{self.name}"


@dataclass(frozen=True)
class AgentSettings:
    """Where the site agent runs (``placement``) and, inside an allocation, the job's size.

    ``allocation`` is for sites whose login nodes forbid long-running processes: the
    agent is a Slurm job submitted from the scheduler host, which keeps nothing running
    there. Before ``walltime`` the agent submits its successor and stops; runs in flight
    are recorded ``interrupted``. Partition and account default to ``slurm``'s.
    """

    placement: Placement = "host"
    walltime: str = checked(values.walltime, "1-00:00:00")
    memory: str = checked(values.memory, "2GiB")
    partition: str | None = checked(values.slurm_name, None)
    account: str | None = checked(values.slurm_name, None)


@dataclass(frozen=True)
class Paths:
    """Where things live. ``root`` is on each host; ``state`` on the client.

    ``project`` (the user's project folder, which must exist) is relative to the
    inventory folder. ``root`` and ``shared`` are read by remote hosts: absolute.
    """

    state: str | None = checked(values.state_folder, None)
    root: str | None = checked(values.remote_folder, None)
    project: str = "../.."
    shared: str | None = checked(values.remote_folder, None)


@dataclass(frozen=True)
class RoleChoice:
    """One entry of ``toppipe.roles``: a role by name and, for Ansible roles, the hosts
    and groups it runs on (all hosts when empty). Written ``- name`` or
    ``- {role: name, hosts: [group, ...]}``."""

    role: str
    hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Settings:
    """Site-wide settings: the ``toppipe`` mapping in ``group_vars/all.yml``."""

    site: str = checked(values.site_name)
    runtime: Runtime = "native"
    bind: str = checked(values.ipv4_address, "127.0.0.1")
    ports: Ports = field(default_factory=Ports)
    reach: Reach | None = None  # unset: tunnel when the scheduler is not on the client, else direct
    tunnel: TunnelSettings = field(default_factory=TunnelSettings)
    workers: WorkerSettings = field(default_factory=WorkerSettings)
    paths: Paths = field(default_factory=Paths)
    slurm: SlurmSettings = field(default_factory=SlurmSettings)
    agent: AgentSettings = field(default_factory=AgentSettings)
    # name -> pool, in the order written; empty: the default pools (hosts, and slurm with a slurm group)
    pools: tuple[tuple[str, PoolSettings], ...] = ()  # written as a mapping: the loader builds it
    roles: tuple[RoleChoice, ...] = ()  # empty: toppipe's own roles, in their order


@dataclass(frozen=True)
class HostVars:
    """The host variables toppipe understands (others pass through to Ansible)."""

    ansible_host: str | None = checked(values.host_address, None)
    ansible_port: int | None = checked(values.port, None)
    ansible_user: str | None = checked(values.user_name, None)
    ansible_connection: Connection = "ssh"
    ansible_ssh_private_key_file: str | None = checked(values.private_key_file, None)  # read on the desktop
    ansible_ssh_common_args: str | None = None  # -o Key=Value; checked by the loader
    ansible_python_interpreter: str | None = None  # auto, auto_silent... or a program
    toppipe_workers: int | None = checked(values.at_least(0, ""), None)
    toppipe_runtime: Runtime | None = None
    toppipe_python: str | None = checked(values.remote_command, None)


@dataclass(frozen=True)
class Host:
    """One machine of the site, with its effective settings."""

    name: str
    address: str
    connection: Connection
    user: str | None
    port: int | None
    ssh_key: str | None
    known_hosts: str | None
    jump: str | None
    groups: tuple[str, ...]
    runtime: Runtime
    workers: int
    python: str | None
    extra_vars: tuple[tuple[str, object], ...] = ()

    @property
    def is_local(self) -> bool:
        return self.connection == "local"


@dataclass(frozen=True)
class Site:
    """A whole site: its settings, hosts and groups, loaded from one inventory."""

    name: str
    inventory: Path
    settings: Settings
    hosts: tuple[Host, ...]
    groups: tuple[tuple[str, tuple[str, ...]], ...]
    pools: tuple[Pool, ...] = ()

    def pool(self, name: str) -> Pool:
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise KeyError(name)

    def host_pools(self, host: str) -> tuple[Pool, ...]:
        """The hosts pools with workers on *host*."""
        return tuple(p for p in self.pools if p.kind == "hosts" and any(h == host and n for h, n in p.hosts))

    @property
    def slurm_pools(self) -> tuple[Pool, ...]:
        return tuple(p for p in self.pools if p.kind == "slurm")

    def group(self, name: str) -> tuple[Host, ...]:
        members = dict(self.groups).get(name, ())
        return tuple(h for h in self.hosts if h.name in members)

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    @property
    def scheduler_host(self) -> Host:
        return self.group("scheduler")[0]

    @property
    def tunnelled(self) -> bool:
        """Whether the client reaches the site through its ssh tunnel (``reach``, by default when
        the scheduler is not on the client)."""
        return (self.settings.reach or ("direct" if self.scheduler_host.is_local else "tunnel")) == "tunnel"

    @property
    def agent_in_allocation(self) -> bool:
        """Whether the site agent runs inside a Slurm allocation rather than on the scheduler host."""
        return self.settings.agent.placement == "allocation"

    @property
    def client_host(self) -> Host:
        return self.group("client")[0]

    @property
    def state_dir(self) -> Path:
        """The client-side state folder of this site (private, per user)."""
        return state_dir_for(self.name, self.settings.paths.state)

    def host_root(self, host: Host, home: str | None = None) -> str:
        """The folder on *host* where this site keeps services, config and data.

        ``paths.root`` if set; the state folder on the client; else
        ``<home>/.toppipe/<site>`` with the remote user's *home*.
        """
        if self.settings.paths.root:
            return self.settings.paths.root
        if host.is_local:
            return str(self.state_dir)
        return f"{home or '~'}/.toppipe/{self.name}"

    @property
    def project_dir(self) -> Path:
        project = Path(os.path.expanduser(self.settings.paths.project))
        if not project.is_absolute():
            project = self.inventory.parent / project
        return project.resolve()


def state_dir_for(site: str, configured: str | None = None) -> Path:
    """``$TOPPIPE_STATE_DIR/<site>``, else the inventory's ``paths.state``, else XDG."""
    if os.environ.get("TOPPIPE_STATE_DIR"):
        return Path(os.environ["TOPPIPE_STATE_DIR"]) / site
    if configured:
        return Path(os.path.expanduser(configured))
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "toppipe" / site
