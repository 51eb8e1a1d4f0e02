"""Shell access to a site's hosts for the checks, through pytest-testinfra.

This machine runs its commands locally (``local://``); ssh hosts go through
testinfra's ``ssh://`` backend with strict host keys, no prompts, and one
master connection per host that every command of the run reuses. Commands
of one host are batched: one round trip runs them all, concurrently.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import testinfra
import testinfra.backend.local  # noqa: F401  imported now, not on a first connection: under pytest that
import testinfra.backend.ssh  # noqa: F401  lazy import parses the module, which races other threads' ast.parse

from deploy import host_shell
from deploy.inventory import Host

CONNECT_TIMEOUT_SECONDS = 10
CONTROL_PERSIST_SECONDS = 60


class Unreachable(Exception):
    """A host that did not answer over ssh; the message says why in one line."""


@dataclass(frozen=True)
class Section:
    """Exit code and output (stdout and stderr) of one command of a batch."""

    rc: int
    output: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


def batch_script(sections: dict[str, str], token: str) -> str:
    """Bash running every section at once, then printing each one's output and exit code between marker lines."""
    lines = ["t=$(mktemp -d) || exit 1", "trap 'rm -rf \"$t\"' EXIT"]
    for i, body in enumerate(sections.values()):
        lines.append(f'{{ (\n{body}\n) </dev/null >"$t/{i}" 2>&1; echo $? >"$t/{i}.rc"; }} &')
    lines.append("wait")
    for i in range(len(sections)):
        lines.append(f'echo "{token} begin {i}"; cat "$t/{i}"; echo; echo "{token} end $(cat "$t/{i}.rc")"')
    return "\n".join(lines)


def last_line(output: str) -> str:
    """The last line of a section's output, without bash's ``bash: line N:`` prefix."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return re.sub(r"^(ba)?sh: line \d+: ", "", lines[-1]) if lines else "no output"


def parse_batch(stdout: str, names: list[str], token: str) -> dict[str, Section]:
    """The sections of a :func:`batch_script` run, by name; a missing one failed."""
    found: dict[str, Section] = {}
    current: int | None = None
    lines: list[str] = []
    for line in stdout.splitlines():
        if line.startswith(f"{token} begin "):
            current, lines = int(line.rsplit(" ", 1)[1]), []
        elif line.startswith(f"{token} end ") and current is not None:
            rc = line.rsplit(" ", 1)[1]
            found[names[current]] = Section(int(rc) if rc.isdigit() else 1, "\n".join(lines).strip())
            current = None
        elif current is not None:
            lines.append(line)
    return {name: found.get(name, Section(1, "no output: the command was cut short")) for name in names}


def ssh_hostspec(host: Host) -> str:
    """``ssh://[user@]address[:port]`` for testinfra."""
    user = urllib.parse.quote(host.user, safe="") + "@" if host.user else ""
    address = f"[{host.address}]" if ":" in host.address else host.address
    return f"ssh://{user}{address}" + (f":{host.port}" if host.port else "")


def ssh_options(host: Host, control_path: str, ssh_config: Path | None = None) -> dict:
    """testinfra ``SshBackend`` arguments: the inventory's key and known hosts, checked strictly, never a prompt.

    *ssh_config* (:func:`deploy.inventory.jumps.ssh_config`) gives a jumped host's hops their inventory settings.
    """
    extra = ["-o StrictHostKeyChecking=yes", "-o BatchMode=yes", "-o LogLevel=ERROR"]
    if host.known_hosts:
        extra.append(f"-o UserKnownHostsFile={shlex.quote(host.known_hosts)}")
    if host.jump:
        extra.append(f"-o ProxyJump={shlex.quote(host.jump)}")
        if ssh_config:
            extra.append(f"-F {shlex.quote(str(ssh_config))}")
    return {
        "ssh_identity_file": host.ssh_key,
        "ssh_extra_args": " ".join(extra),
        "timeout": CONNECT_TIMEOUT_SECONDS,
        "controlpath": control_path,  # with ControlMaster=auto and ControlPersist, added by the backend
        "controlpersist": CONTROL_PERSIST_SECONDS,
    }


def _why(stderr: str, fallback: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else fallback


class Connections:
    """testinfra hosts of a site by name; use as a context manager to close the ssh masters."""

    def __init__(self, hosts: Iterable[Host], ssh_config: Path | None = None):
        self._control_dir = tempfile.mkdtemp(prefix="toppipe-ssh-")
        self._hosts = {}
        self._masters: dict[str, tuple[str, str]] = {}  # host name -> (control path, address)
        for index, host in enumerate(hosts):
            if host.is_local:
                self._hosts[host.name] = testinfra.get_host("local://")
                continue
            path = f"{self._control_dir}/{index}"
            self._hosts[host.name] = testinfra.get_host(ssh_hostspec(host), **ssh_options(host, path, ssh_config))
            self._masters[host.name] = (path, host.address)

    def batch(self, host: str, sections: dict[str, str], token: str) -> dict[str, Section]:
        """Run *sections* on *host* in one round trip; raises :class:`Unreachable`."""
        command = f"bash -c {shlex.quote(batch_script(sections, token))}"
        if host not in self._masters:  # this machine: on its host, also from inside the client image
            command = host_shell.shell(command)
        try:
            result = self._hosts[host].run(command)
        except RuntimeError as exc:  # testinfra's ssh backend: ssh itself failed (exit 255)
            failed = exc.args[0] if exc.args else None
            raise Unreachable(_why(getattr(failed, "stderr", ""), "ssh failed with no message")) from None
        if f"{token} begin " not in result.stdout:  # no shell ran it (no ssh or no bash)
            raise Unreachable(_why(result.stderr, f"exit {result.rc} and no output"))
        return parse_batch(result.stdout, list(sections), token)

    def forward_argv(self, host: str, address: str, port: int) -> list[str]:
        """ssh's stdio forward to *address*:*port* made by *host*, over its master connection
        (opened by a :meth:`batch` on it first)."""
        from distributed.comm.addressing import unparse_host_port

        path, destination = self._masters[host]
        return ["ssh", "-o", f"ControlPath={path}", "-o", "ControlMaster=no", "-W", unparse_host_port(address, port), destination]

    def command_argv(self, host: str, command: str) -> list[str]:
        """ssh running *command* on *host* over its master connection (opened by a :meth:`batch` on it first)."""
        path, destination = self._masters[host]
        return ["ssh", "-o", f"ControlPath={path}", "-o", "ControlMaster=no", destination, command]

    def close(self) -> None:
        for path, address in self._masters.values():
            if not os.path.exists(path):
                continue
            subprocess.run(
                ["ssh", "-o", f"ControlPath={path}", "-O", "exit", address],
                stdin=subprocess.DEVNULL, capture_output=True, timeout=10, check=False,
            )  # fmt: skip
        shutil.rmtree(self._control_dir, ignore_errors=True)

    def __enter__(self) -> Connections:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
