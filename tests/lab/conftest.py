"""Fixtures for tests on the lab site made by ``scripts/lab`` (root only).

The session fixture ``lab`` brings the lab up when ``scripts/lab status`` is
not 0 and returns a :class:`Lab` built from its lab.json.

The whole suite (``scripts/test``) runs the modules listed in ``BESIDE`` (sites
of their own) in a second pytest beside this one. Tests marked ``lab_alone``
(they stop a lab host, or count what every site has) run after every other
test and wait for that run to end; tests marked ``lab_lifecycle`` (which take
the lab down and up again) run last.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAB_SCRIPT = REPO / "scripts" / "lab"
LAB_STATE = Path(os.environ.get("TOPPIPE_LAB_STATE", "/var/lib/toppipe-lab"))


#: Modules that deploy sites of their own (own names and ports) and need nothing of the shared
#: one: ``scripts/test`` runs them in a pytest of their own, beside the rest of the lab tier.
BESIDE = ("tests/lab/test_lab_walltime.py", "tests/lab/test_lab_allocation.py", "tests/lab/test_entry_image.py")
#: Markers of the tests that must not run while the modules beside run, in the order they run last.
LAST = ("lab_alone", "lab_lifecycle")


def pytest_collection_modifyitems(config, items):
    """Move lab_alone tests, then lab_lifecycle tests (down/up), behind every other test."""
    items.sort(key=_last_rank)


def _last_rank(item) -> int:
    return next((rank for rank, name in enumerate(LAST, 1) if item.get_closest_marker(name)), 0)


@pytest.fixture(autouse=True)
def _alone_on_the_lab(request):
    """A lab_alone or lab_lifecycle test first waits for the modules run beside to end."""
    if _last_rank(request.node):
        _wait_for("TOPPIPE_LAB_BESIDE_LOCK", "the lab modules run beside")


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

    @property
    def jump_host(self) -> str:
        """The host the desktop reaches the others through (the only one it reaches when closed)."""
        return self.data.get("jump_host", "login")

    @property
    def closed(self) -> bool:
        """Whether the desktop reaches only the jump host's sshd (``scripts/lab close``)."""
        return self.data.get("access") == "closed"

    def _ssh_options(self, known_hosts: str | None = None) -> list[str]:
        return [
            "-i", self.data["ssh_private_key"],
            "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={known_hosts or self.data['ssh_known_hosts']}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=10",
            "-p", str(self.data["ssh_port"]),
        ]

    def ssh_argv(self, host: str, user: str | None = None,
                 known_hosts: str | None = None) -> list[str]:
        """ssh to *host*; hosts other than the jump host through it, as on a real site."""
        jump = []
        if host != self.jump_host:
            hop = ["ssh", "-F", "/dev/null", *self._ssh_options(), "-W", "[%h]:%p",
                   f"{self.data['ssh_user']}@{self.hosts[self.jump_host]}"]
            jump = ["-o", "ProxyCommand=" + shlex.join(hop)]
        return [
            "ssh", "-n", "-F", "/dev/null", *self._ssh_options(known_hosts), *jump,
            f"{user or self.data['ssh_user']}@{self.hosts[host]}",
        ]

    def forward_argv(self, address: str, port: int) -> list[str]:
        """ssh's stdio forward to *address*:*port* made by the jump host (a connection from inside the site)."""
        from distributed.comm.addressing import unparse_host_port

        target = unparse_host_port(address, port)
        shared = ["-o", "ControlMaster=auto", "-o", f"ControlPath=/tmp/toppipe-lab-fwd-{os.getpid()}", "-o", "ControlPersist=30"]
        return ["ssh", "-F", "/dev/null", *self._ssh_options(), *shared, "-W", target,
                f"{self.data['ssh_user']}@{self.hosts[self.jump_host]}"]

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


_waited: set[str] = set()


def _wait_for(variable: str, what: str) -> None:
    """Wait until ``scripts/test``'s background job releases the lock named by $*variable*, if any
    (once: the tier report says how long)."""
    import fcntl
    import time

    lock = os.environ.get(variable)
    if not lock or not Path(lock).exists() or variable in _waited:
        return
    _waited.add(variable)
    began = time.monotonic()
    with open(lock) as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # released when that part of the job ends, however it ends
    log = Path(lock).with_suffix(".log")
    last = log.read_text().strip().splitlines()[-1:] if log.exists() else []
    from tests import tier_times

    tier_times.notes.append(f"the lab tier waited {time.monotonic() - began:.0f} s for {what}: {' '.join(last)}")


@pytest.fixture(scope="session")
def lab() -> Lab:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    _wait_for("TOPPIPE_LAB_PREPARE_LOCK", "scripts/test's background job (lab up, images)")
    if run_lab("status", timeout=120).returncode != 0:
        up = run_lab("up")
        if up.returncode != 0:
            pytest.fail(f"scripts/lab up failed ({up.returncode}):\n{up.stderr}\n{up.stdout}")
    if os.environ.get("TOPPIPE_LAB_TIER_STARTED"):
        Path(os.environ["TOPPIPE_LAB_TIER_STARTED"]).touch()  # scripts/test's modules beside may start
    return load_lab()


@pytest.fixture(scope="session")
def _shared_state_dir(lab, tmp_path_factory):
    """The lab site's one client state folder for the run; the site is taken down (purged) at the end."""
    from tests.conftest import run_deploy

    folder = tmp_path_factory.mktemp("labstate")
    yield folder
    run_deploy("down", "inventories/lab", "--purge", state_dir=folder, timeout=300)


@pytest.fixture(scope="module")
def state_dir(_shared_state_dir):
    """The client state folder of the shared lab site (its CA, secrets and connection record)."""
    return _shared_state_dir


@pytest.fixture(scope="module")
def site(lab, state_dir):
    """``deploy up inventories/lab`` at the start of each module, on one deployment shared by the run.

    The first up deploys the site (images built when missing); later ones are
    no-ops unless a module changed or stopped something, which they repair.
    Slurm workers the module scaled or adapted are retired after it, so the
    next module (which may deploy a site of its own) finds no Slurm job.
    """
    from tests.conftest import run_deploy

    up = run_deploy("up", "inventories/lab", state_dir=state_dir, timeout=1500)
    assert up.code == 0, up.stdout + up.stderr
    yield up
    _retire_slurm_workers(state_dir)


def _retire_slurm_workers(state_dir: Path, timeout: float = 120) -> None:
    """Scale the shared site's Slurm pools to zero and wait; a site the module took down has none."""
    import time

    import toppipe
    from toppipe.errors import ToppipeError

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TOPPIPE_STATE_DIR", str(state_dir))
        try:
            session = toppipe.connect("lab", timeout=10)
        except ToppipeError:  # the module took the site down (down cancels every job)
            return
        with session:
            for pool in session.pools():
                if pool.kind == "slurm":
                    session.scale(0, pool=pool.name)  # also stops adapting
            deadline = time.monotonic() + timeout
            while any(w.slurm_job for w in session.workers()):
                assert time.monotonic() < deadline, "Slurm workers of an earlier module did not retire"
                time.sleep(0.5)


@pytest.fixture
def session(site, state_dir, monkeypatch):
    """A toppipe session on the module's lab site."""
    monkeypatch.setenv("TOPPIPE_STATE_DIR", str(state_dir))
    import toppipe

    with toppipe.connect("lab") as session:
        yield session
