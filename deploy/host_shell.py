"""Shell commands for this desktop, run on the desktop itself even from inside the client image.

Under ``scripts/toppipe`` from the client image, ``TOPPIPE_HOST_RELAY`` names the entry
script's relay (scripts/toppipe.d/relay.sh explains why it exists): every command
the deploy runs *for this machine* (pyinfra's ``@local`` host, the checks' local host,
a followed log) goes through ``scripts/toppipe.d/on-host`` and runs on the host. Without
the variable (``.venv``) commands run as they always did.
"""

from __future__ import annotations

import os
import shlex

from deploy.artifacts import REPO

ON_HOST = str(REPO / "scripts" / "toppipe.d" / "on-host")
#: The Python of the desktop's own services: .venv or the client image, whichever the
#: desktop has (scripts/toppipe-python), so that their definitions do not depend on
#: the environment that ran ``up``.
CLIENT_PYTHON = str(REPO / "scripts" / "toppipe-python")


def relayed() -> bool:
    """Whether this process runs inside the client image under the entry script's relay."""
    return bool(os.environ.get("TOPPIPE_HOST_RELAY"))


def shell(command: str, stdin: bool = False) -> str:
    """*command* (sh) as a shell command line that runs it on this machine's host."""
    if not relayed():
        return command
    return " ".join([ON_HOST, *(["--stdin"] if stdin else []), shlex.quote(command)])


def argv(command: str) -> list[str]:
    """*command* (bash) as an argv that runs it on this machine's host."""
    if not relayed():
        return ["bash", "-c", command]
    return [ON_HOST, f"bash -c {shlex.quote(command)}"]


def install_pyinfra_hook() -> None:
    """Route pyinfra's ``@local`` commands through the relay (once; nothing without one)."""
    from pyinfra.connectors import local

    if not relayed() or getattr(local.run_local_process, "relayed", False):
        return
    run = local.run_local_process

    def run_on_host(command: str, stdin=None, *args, **kwargs):
        return run(shell(command, stdin=bool(stdin)), stdin, *args, **kwargs)

    run_on_host.relayed = True  # type: ignore[attr-defined]
    local.run_local_process = run_on_host
