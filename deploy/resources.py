"""What roles ask for: desired state, in words no engine owns.

Roles return :class:`Action` lists; an engine turns each resource into its
own operations: pyinfra toppipe's resources, ansible-runner Ansible roles. Nothing here runs
anything, so plans can be printed and unit-tested.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Directory:
    """A folder that exists with *mode*."""

    path: str
    mode: int = 0o700

    def describe(self) -> str:
        return f"folder {self.path}"


@dataclass(frozen=True)
class File:
    """A file with exactly *content*. Secret content is never shown or logged."""

    path: str
    content: bytes = field(repr=False)
    mode: int = 0o600
    secret: bool = False

    def describe(self) -> str:
        return f"file {self.path}" + (" (secret)" if self.secret else "")


@dataclass(frozen=True)
class Upload:
    """A copy of the client's file *source* at *path* (compared by hash, sent only when it differs).

    With *named_by_content* the path's name holds the digest of its content
    (images): a file there is the same file and is not hashed again; a new
    one is written beside it and renamed, so a present file is a whole one.
    """

    source: str
    path: str
    mode: int = 0o600
    named_by_content: bool = False

    def describe(self) -> str:
        return f"upload {self.path}"


@dataclass(frozen=True)
class Absent:
    """A path that must not exist (used by ``down --purge``)."""

    path: str

    def describe(self) -> str:
        return f"remove {self.path}"


@dataclass(frozen=True)
class Ensure:
    """A state checked by a shell *check* (exit 0: holds) and made by *apply*.

    *probed* False: the fast path of ``up`` (:mod:`deploy.converged`) does not run the check,
    for checks that take a service's own client (seconds, where a probe takes milliseconds).
    Their state is trusted while the host's inputs are unchanged and its services run as
    recorded; any full run of the host (and ``up --full``) checks it.
    """

    name: str
    check: str
    apply: str
    probed: bool = True

    def describe(self) -> str:
        return self.name


@dataclass(frozen=True)
class ServiceSpec:
    """A long-running service: what to run, where, and how to know it is up.

    ``ports`` are the (address, port) pairs that answer once it has started.
    ``env_file`` holds secrets as ``KEY=value`` lines; it is read at start and
    never put on a command line. ``image`` is the path of the container image
    (an Apptainer .sif) on the host and ``binds`` the host paths bound into it
    (``SRC[:DEST[:OPTS]]``); runtimes that run no containers ignore both.
    ``stop_argv`` is the service's own clean shutdown (``pg_ctl stop``), run
    in its environment before its processes are signalled. ``runtime`` names
    a runtime for this service other than its host's (the dashboard runs
    natively beside ``deploy``, whose actions it performs).

    A changed definition replaces the running one only when it can start:
    ``check_argv``, run first in the service's environment (its image, binds
    and variables), must exit 0 (the agent parsing its new configuration);
    then, if the new definition does not start, the last one that did runs
    again, with its copies of ``files`` (the configuration files it reads at
    start) put back. Neither is part of the digest: they change no process.

    ``after`` names services of the same host this one needs running before it
    starts (workers: the scheduler); services that do not need each other start
    side by side. ``stop_grace`` is how many seconds its processes get between
    SIGTERM and SIGKILL. ``ends_with_scheduler`` says its processes end when the site's
    scheduler stops (dask workers do not reconnect): an ``up`` that restarts the scheduler starts
    them again after it. None of these is part of the digest either.
    """

    site: str
    name: str
    argv: tuple[str, ...]
    rundir: str
    workdir: str
    env: tuple[tuple[str, str], ...] = ()
    env_file: str | None = None
    ports: tuple[tuple[str, int], ...] = ()
    start_timeout: float = 60.0
    image: str | None = None
    binds: tuple[str, ...] = ()
    stop_argv: tuple[str, ...] = ()
    runtime: str | None = None
    check_argv: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    stop_grace: float = 5.0
    ends_with_scheduler: bool = False

    @property
    def marker(self) -> str:
        """Set as TOPPIPE_SERVICE in the environment of every process of the service."""
        return f"{self.site}/{self.name}"

    def digest(self) -> str:
        """Changes whenever a restart is needed to apply this spec."""
        fields = asdict(self)
        del fields["check_argv"], fields["files"]  # what is checked and kept, not what runs
        del fields["after"], fields["stop_grace"], fields["ends_with_scheduler"]  # when it starts and stops, not what runs
        for key in ("image", "binds", "stop_argv", "runtime"):  # left out when unset, so that the digests of
            if not fields[key]:  # specs without a container stay what they were
                del fields[key]
        blob = json.dumps(fields, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class Service:
    """A service that is running (and matches its spec), or stopped."""

    spec: ServiceSpec
    running: bool = True
    restart: bool = False  # start it again even if it runs as wanted (its scheduler was restarted)

    def describe(self) -> str:
        return f"{'restart' if self.restart else 'start' if self.running else 'stop'} {self.spec.name}"


@dataclass(frozen=True)
class AnsibleTasks:
    """The task file *tasks* (``main``, ``down``, ``purge``) of the Ansible-layout role in *folder*.

    *variables* are what toppipe tells the role about its host (``toppipe_root``...);
    values are plain YAML data. The Ansible engine runs these; every task of
    the file is then reported as an :class:`AnsibleTask`.
    """

    role: str
    folder: str
    tasks: str = "main"
    variables: tuple[tuple[str, object], ...] = ()

    def describe(self) -> str:
        return f"ansible role {self.role}" + ("" if self.tasks == "main" else f" ({self.tasks})")


@dataclass(frozen=True)
class AnsibleTask:
    """One task of an Ansible role as it ran (what the Ansible engine reports, never asked for)."""

    name: str

    def describe(self) -> str:
        return self.name


Resource = Directory | File | Upload | Absent | Ensure | Service | AnsibleTasks | AnsibleTask


@dataclass(frozen=True)
class Action:
    """One resource of one role on one host."""

    host: str
    role: str
    resource: Resource

    def describe(self) -> str:
        return f"{self.host} {self.role}: {self.resource.describe()}"
