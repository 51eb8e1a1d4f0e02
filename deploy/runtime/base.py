"""The container-runtime interface: how a service spec becomes running code."""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass

from deploy.resources import ServiceSpec


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
        """Parse ``state=.. pid=.. digest=.. started=.. port:ADDR:PORT=open|closed``."""
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
        )


class Runtime(abc.ABC):
    """Builds the shell commands that start, stop and inspect services."""

    name: str

    @abc.abstractmethod
    def status_command(self, spec: ServiceSpec) -> str: ...

    @abc.abstractmethod
    def start_command(self, spec: ServiceSpec) -> str: ...

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
