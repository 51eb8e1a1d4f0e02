"""The container-runtime interface: how a service spec becomes running code."""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass

from deploy.resources import ServiceSpec
from deploy.runtime.shell import guarded_start, keep_running


class State(enum.Enum):
    RUNNING = "running"
    STOPPED = "stopped"


@dataclass(frozen=True)
class ServiceState:
    """What a host says about one service, parsed from a status command."""

    state: State
    pid: int | None
    digest: str | None
    started: int | None
    ports: tuple[tuple[str, bool], ...]
    kept: str | None = None  # digest of the definition kept to fall back on (RUNDIR/good)

    @property
    def running(self) -> bool:
        return self.state is State.RUNNING

    @property
    def answering(self) -> bool:
        return self.running and all(up for _, up in self.ports)

    def busy_ports(self) -> list[str]:
        """Ports that answer although the service is not running: someone else has them."""
        return [hp for hp, up in self.ports if up] if not self.running else []

    @classmethod
    def parse(cls, output: str) -> ServiceState:
        """Parse ``state=.. pid=.. digest=.. started=.. kept=.. port:ADDR:PORT=open|closed``."""
        fields: dict[str, str] = {}
        ports: list[tuple[str, bool]] = []
        for token in output.split():
            key, _, value = token.partition("=")
            if key.startswith("port:"):
                ports.append((key[5:], value == "open"))
            else:
                fields[key] = value
        return cls(
            state=State(fields.get("state", "stopped")),
            pid=int(fields["pid"]) if fields.get("pid") else None,
            digest=fields.get("digest") or None,
            started=int(fields["started"]) if fields.get("started") else None,
            ports=tuple(ports),
            kept=fields.get("kept") or None,
        )


class Step(enum.Enum):
    """What applying a :class:`~deploy.resources.Service` does on a host."""

    NOTHING = "nothing"
    START = "start"  # (re)start it: checked first, the last good definition back if it fails
    KEEP = "keep"  # it runs as wanted: remember this definition as the one to fall back on
    STOP = "stop"


def next_step(state: ServiceState, digest: str, running: bool, restart: bool = False) -> Step:
    """The step that brings a service in *state* to its wanted definition (*digest*) and *running*;
    *restart*: start it again even if it runs as wanted."""
    if not running:
        return Step.STOP if state.running else Step.NOTHING
    if restart or not state.answering or state.digest != digest:
        return Step.START
    return Step.KEEP if state.kept != digest else Step.NOTHING


#: How a start script says, on stdout, that it refused a new definition (and the old one runs).
REFUSED_MARK = "REFUSED: "


def refusal(output: str) -> str | None:
    """Why a start script refused a new definition (its ``REFUSED:`` line), or None if it did not."""
    for line in output.splitlines():
        if line.startswith(REFUSED_MARK):
            return line[len(REFUSED_MARK):].strip()
    return None


class Runtime(abc.ABC):
    """Builds the shell commands that start, stop and inspect services."""

    name: str

    @abc.abstractmethod
    def status_command(self, spec: ServiceSpec) -> str: ...

    def start_command(self, spec: ServiceSpec) -> str:
        """Check the new definition, replace the running one, and fall back to the last good one if it fails."""
        return guarded_start(spec, self.launch_command(spec), self.check_command(spec) if spec.check_argv else "")

    def keep_command(self, spec: ServiceSpec) -> str:
        """Remember the running definition (*spec*) as the one to fall back on, without restarting it."""
        return keep_running(spec, self.launch_command(spec))

    @abc.abstractmethod
    def launch_command(self, spec: ServiceSpec) -> str:
        """Stop what runs of the service, start *spec*, wait until it answers (exit 0) or fail with why."""

    @abc.abstractmethod
    def check_command(self, spec: ServiceSpec) -> str:
        """Run ``spec.check_argv`` in the service's environment, beside what runs."""

    @abc.abstractmethod
    def stop_command(self, spec: ServiceSpec) -> str: ...

    @abc.abstractmethod
    def sweep_command(self, site: str) -> str:
        """Stop every process of *site* on the host, whatever started it."""

    @abc.abstractmethod
    def leftovers_command(self, site: str) -> str:
        """Print the pids of processes of *site* still on the host, one a line."""

    @abc.abstractmethod
    def parse_status(self, output: str) -> ServiceState: ...
