"""Fixtures for tests on the lab site made by ``scripts/lab`` (root only).

The session fixture ``lab`` brings the lab up when ``scripts/lab status`` is
not 0 and returns a :class:`Lab` built from its lab.json. Tests marked
``lab_lifecycle`` (which take the lab down and up again) run last.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAB_SCRIPT = REPO / "scripts" / "lab"
LAB_STATE = Path(os.environ.get("TOPPIPE_LAB_STATE", "/var/lib/toppipe-lab"))


def pytest_collection_modifyitems(config, items):
    """Move lab_lifecycle tests (down/up) behind every other test."""
    items.sort(key=lambda item: item.get_closest_marker("lab_lifecycle") is not None)


def run_lab(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LAB_SCRIPT), *args], capture_output=True, text=True, timeout=timeout
    )


@dataclass(frozen=True)
class Lab:
    """What lab.json says, plus ssh and Slurm helpers for tests."""

    data: dict = field(repr=False)

    @property
    def hosts(self) -> dict[str, str]:
        """Host name -> address."""
        return {h["name"]: h["address"] for h in self.data["hosts"]}

    def ssh_argv(self, host: str, user: str | None = None,
                 known_hosts: str | None = None) -> list[str]:
        return [
            "ssh", "-n", "-F", "/dev/null",
            "-i", self.data["ssh_private_key"],
            "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={known_hosts or self.data['ssh_known_hosts']}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=10",
            "-p", str(self.data["ssh_port"]),
            f"{user or self.data['ssh_user']}@{self.hosts[host]}",
        ]

    def ssh(self, host: str, command: str, *, check: bool = True, timeout: float = 120,
            **kwargs) -> subprocess.CompletedProcess:
        """Run a shell command on a host over ssh; raise with its output on failure."""
        argv = self.ssh_argv(host, **kwargs) + ["--", command]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"ssh {host} {command!r} exited {proc.returncode}\n"
                f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
            )
        return proc


def load_lab() -> Lab:
    return Lab(json.loads((LAB_STATE / "lab.json").read_text()))


@pytest.fixture(scope="session")
def lab() -> Lab:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    if run_lab("status", timeout=120).returncode != 0:
        up = run_lab("up")
        if up.returncode != 0:
            pytest.fail(f"scripts/lab up failed ({up.returncode}):\n{up.stderr}\n{up.stdout}")
    return load_lab()


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory):
    """A state folder of the module's own: its own CA, secrets and connection record."""
    return tmp_path_factory.mktemp("labstate")


@pytest.fixture(scope="module")
def site(lab, state_dir):
    """``deploy up inventories/lab`` once for the module (images built when missing); ``down --purge`` after."""
    from tests.conftest import run_deploy

    up = run_deploy("up", "inventories/lab", state_dir=state_dir, timeout=1500)
    assert up.code == 0, up.stdout + up.stderr
    yield up
    run_deploy("down", "inventories/lab", "--purge", state_dir=state_dir, timeout=300)


@pytest.fixture
def session(site, state_dir, monkeypatch):
    """A toppipe session on the module's lab site."""
    monkeypatch.setenv("TOPPIPE_STATE_DIR", str(state_dir))
    import toppipe

    with toppipe.connect("lab") as session:
        yield session
