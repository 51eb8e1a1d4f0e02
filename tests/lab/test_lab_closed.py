"""The closed lab is shaped like a real site: from the desktop only login's sshd answers,
while the hosts reach each other as on a cluster, and the shared folder is not on the desktop."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

CONNECT_TIMEOUT = 2.0  # a dropped SYN times out; the desktop waits no longer


@pytest.fixture(scope="module")
def closed_lab(lab):
    if not lab.closed:
        pytest.skip("the lab is open (scripts/lab close, or TOPPIPE_LAB_ACCESS=closed for up)")
    return lab


def reachable(address: str, port: int) -> bool:
    """A TCP connection from the desktop succeeds (refused and timed out both count as unreachable)."""
    try:
        with socket.create_connection((address, port), timeout=CONNECT_TIMEOUT):
            return True
    except OSError:
        return False


def test_only_logins_sshd_answers_the_desktop(closed_lab):
    hosts = closed_lab.hosts
    assert reachable(hosts["login"], 22)
    unreachable = {("login", 8786), ("db", 5432), ("db", 22), ("node1", 22), ("node2", 22)}
    assert [(h, p) for h, p in sorted(unreachable) if reachable(hosts[h], p)] == []


def test_hosts_reach_each_other(closed_lab):
    hosts = closed_lab.hosts
    probe = " && ".join(f"timeout 5 bash -c '</dev/tcp/{hosts[h]}/22'" for h in ("db", "node1", "node2"))
    closed_lab.ssh("login", probe)
    closed_lab.ssh("node1", f"timeout 5 bash -c '</dev/tcp/{hosts['node2']}/22'")


def test_the_shared_folder_is_on_the_hosts_only(closed_lab):
    shared = closed_lab.data["shared_path"]
    assert not Path(shared).exists()
    for host in ("login", "node1", "node2"):
        closed_lab.ssh(host, f"test -d {shared} && test -w {shared}")
