"""``python -m roles.tunnel.follow CONFIG.json``: the client's tunnel to an agent that runs
inside a Slurm allocation, following it from node to node.

The agent publishes its address in dask's scheduler file on the shared filesystem.
This reads it through the login node, then runs ``ssh -tt -L ...`` to the agent's node
(through the login node, with the inventory's key, known hosts and jump hosts), so
the forwards resolve on that node: the scheduler and the dask dashboard on its
loopback, PostgreSQL and Redis at the db host's address. Every few seconds it reads
the file again through that connection (ssh's own multiplexing, no new login); when
the address changes (the agent's successor runs elsewhere) or the connection ends,
it connects again. Until an agent runs, nothing listens on the local ends.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

#: Seconds between two reads of the scheduler file, and the longest pause after a failure.
POLL_SECONDS, MOST_PAUSE = 5.0, 15.0


def node_of(scheduler_file_text: str) -> str | None:
    """The host of the address in a dask scheduler file (``tls://10.0.0.5:8786`` -> ``10.0.0.5``)."""
    try:
        address = json.loads(scheduler_file_text)["address"]
    except (ValueError, KeyError, TypeError):
        return None
    host = address.split("://", 1)[-1].rsplit(":", 1)[0]
    return host.strip("[]") or None


def node_argv(config: dict, node: str) -> list[str]:
    """``ssh -tt`` to *node* through the login node, forwarding each local end, and serving as the
    master for the reads of the scheduler file."""
    # the hop to the login node reads its settings (user, key, known hosts, its own jumps) from the site's ssh config
    login = f"{config['login']}:{config['login_port']}" if config.get("login_port") else config["login"]
    argv = ["ssh", *config["hold"], "-F", config["ssh_config"], *config["options"], "-o", f"ProxyJump={login}",
            "-o", "ControlMaster=yes", "-o", f"ControlPath={config['control']}"]  # fmt: skip
    for local, remote, port in config["forwards"]:
        remote = f"[{remote}]" if ":" in remote else remote
        argv += ["-L", f"127.0.0.1:{local}:{remote}:{port}"]
    return [*argv, f"{config['user']}@{node}" if config.get("user") else node, config["hold_command"]]


def login_read_argv(config: dict) -> list[str]:
    """Read the scheduler file on the login node (a connection of its own)."""
    jumps = ["-o", "ProxyJump=" + ",".join(config["jumps"])] if config.get("jumps") else []
    port = ["-p", str(config["login_port"])] if config.get("login_port") else []
    return ["ssh", "-F", config["ssh_config"], *config["options"], *jumps, *port, "-o", "ControlPath=none",
            config["login"], "cat", config["scheduler_file"]]  # fmt: skip


def master_read_argv(config: dict) -> list[str]:
    """Read the scheduler file through the running tunnel's connection."""
    return ["ssh", "-o", f"ControlPath={config['control']}", "-o", "ControlMaster=no", "node", "cat", config["scheduler_file"]]


def _read(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return None
    return node_of(done.stdout) if done.returncode == 0 else None


def follow(config: dict) -> None:
    """Keep a tunnel to the node the scheduler file names, until terminated."""
    pause = 1.0
    while True:
        node = _read(login_read_argv(config))
        if node is None:
            time.sleep(pause)
            pause = min(pause * 2, MOST_PAUSE)
            continue
        tunnel = subprocess.Popen(node_argv(config, node), stdin=subprocess.DEVNULL)
        try:
            while tunnel.poll() is None:
                time.sleep(POLL_SECONDS)
                if tunnel.poll() is None and _read(master_read_argv(config)) not in (node, None):
                    break  # the agent moved
            pause = 1.0
        finally:
            tunnel.terminate()
            tunnel.wait()
        try:
            os.unlink(config["control"])
        except OSError:
            pass


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m roles.tunnel.follow CONFIG.json", file=sys.stderr)
        return 2
    with open(argv[0]) as handle:
        config = json.load(handle)
    # the master's socket: short (a socket's path has at most 107 bytes), private, one per tunnel
    folder = tempfile.mkdtemp(prefix="toppipe-tunnel-")
    config["control"] = os.path.join(folder, "ssh")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # ends the ssh child through follow()'s finally
    try:
        follow(config)
    except KeyboardInterrupt:
        pass
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
