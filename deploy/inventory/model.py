"""The typed, frozen picture of a site that everything downstream reads.

Settings live under the ``toppipe`` key of ``group_vars/all.yml``; host
variables prefixed ``toppipe_`` override them per host. Precedence, highest
first: host variables > group variables > site settings > these defaults.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Runtime = Literal["native", "apptainer"]
Connection = Literal["local", "ssh"]

#: Groups every site has, each with how many hosts it may hold (None: any).
REQUIRED_GROUPS = {"client": 1, "scheduler": 1, "workers": None, "db": 1}
#: Groups a site may have in addition.
OPTIONAL_GROUPS = {"slurm": None}
KNOWN_GROUPS = {**REQUIRED_GROUPS, **OPTIONAL_GROUPS}


@dataclass(frozen=True)
class Ports:
    """TCP ports of the site's services."""

    scheduler: int = 8786
    dashboard: int = 8787
    jupyter: int = 8888
    app: int = 8050  # the site dashboard (toppipe.dashboard) on the client
    postgres: int = 5432  # the run records on the db host (apptainer sites)
    redis: int = 6379


@dataclass(frozen=True)
class WorkerSettings:
    """How dask workers are started on each host of the workers group."""

    per_host: int = 2
    threads: int = 1
    memory: str = "2GiB"


@dataclass(frozen=True)
class SlurmSettings:
    """Dask workers inside Slurm allocations (sites with a ``slurm`` group)."""

    partition: str | None = None
    account: str | None = None
    walltime: str = "01:00:00"
    cores: int = 1
    memory: str = "2GiB"
    max_jobs: int = 8


@dataclass(frozen=True)
class Paths:
    """Where things live. ``root`` is on each host; ``state`` on the client.

    ``project`` (the user's project folder) is relative to the inventory folder.
    """

    state: str | None = None
    root: str | None = None
    project: str = "../.."
    shared: str | None = None


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

    site: str
    runtime: Runtime = "native"
    bind: str = "127.0.0.1"
    ports: Ports = field(default_factory=Ports)
    workers: WorkerSettings = field(default_factory=WorkerSettings)
    paths: Paths = field(default_factory=Paths)
    slurm: SlurmSettings = field(default_factory=SlurmSettings)
    roles: tuple[RoleChoice, ...] = ()  # empty: toppipe's own roles, in their order


@dataclass(frozen=True)
class HostVars:
    """The host variables toppipe understands (others pass through to Ansible)."""

    ansible_host: str | None = None
    ansible_port: int | None = None
    ansible_user: str | None = None
    ansible_connection: Connection = "ssh"
    ansible_ssh_private_key_file: str | None = None
    ansible_ssh_common_args: str | None = None
    ansible_python_interpreter: str | None = None
    toppipe_workers: int | None = None
    toppipe_runtime: Runtime | None = None
    toppipe_python: str | None = None


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
