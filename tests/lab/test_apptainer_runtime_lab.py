"""The apptainer runtime's scripts, run for real over ssh as ``toppipe`` on the lab's node1.

The image is built on node1 without network or root: a sandbox folder holding
only busybox as /bin/sh becomes a .sif with ``apptainer build`` (a second or
less); services run the host's python3 through ``--bind /usr,/lib,/lib64``.
Everything made on node1 is named ``rt-*`` and removed at the end.
"""

from __future__ import annotations

import dataclasses
import shlex
import time
import uuid

import pytest

from deploy.resources import ServiceSpec
from deploy.runtime import ApptainerRuntime, ServiceState, State, parse_instance_list
from deploy.runtime.apptainer import instance_name

pytestmark = pytest.mark.lab

HOST = "node1"
RUNTIME = ApptainerRuntime()
BINDS = ("/usr", "/lib", "/lib64")


class Node:
    """Runs bash scripts on the test host as the lab user."""

    def __init__(self, lab, site: str, base: str):
        self.lab, self.site, self.base = lab, site, base
        self.address = lab.hosts[HOST]

    def bash(self, script: str, check: bool = False, timeout: float = 120):
        return self.lab.ssh(HOST, "bash -c " + shlex.quote(script), check=check, timeout=timeout)

    def status(self, spec: ServiceSpec) -> ServiceState:
        return RUNTIME.parse_status(self.bash(RUNTIME.status_command(spec), check=True).stdout)

    def instances(self) -> list[str]:
        out = self.bash(RUNTIME.instance_list_command(self.site), check=True).stdout
        return [i.name for i in parse_instance_list(out)]

    def leftovers(self) -> list[str]:
        return self.bash(RUNTIME.leftovers_command(self.site), check=True).stdout.split()

    def free_port(self) -> int:
        probe = f"import socket; s=socket.socket(); s.bind(({self.address!r}, 0)); print(s.getsockname()[1])"
        return int(self.bash(f"python3 -c {shlex.quote(probe)}", check=True).stdout)

    def spec(self, name: str, argv: tuple[str, ...], ports=(), **kwargs) -> ServiceSpec:
        return ServiceSpec(
            site=self.site, name=name, argv=argv, rundir=f"{self.base}/services/{name}", workdir=f"{self.base}/work",
            ports=ports, start_timeout=30, image=f"{self.base}/rt.sif", binds=BINDS, **kwargs,
        )  # fmt: skip

    def web(self, name: str = "web") -> ServiceSpec:
        port = self.free_port()
        argv = ("python3", "-m", "http.server", "--bind", self.address, str(port))
        return self.spec(name, argv, ports=((self.address, port),), env=(("RT_GREETING", "hello, world"),))


@pytest.fixture(scope="module")
def node(lab):
    site = f"rt-{uuid.uuid4().hex[:6]}"
    base = f"/tmp/{site}"
    node = Node(lab, site, base)
    sandbox = f"{base}/sandbox"
    node.bash(
        f"set -e; mkdir -p {base}/work {sandbox}/bin {sandbox}/usr {sandbox}/lib {sandbox}/lib64 {sandbox}/etc {sandbox}/tmp\n"
        f"cp /bin/busybox {sandbox}/bin/sh\n"
        f"app=$(command -v apptainer || command -v singularity); \"$app\" -s build {base}/rt.sif {sandbox}",
        check=True,
    )  # fmt: skip
    yield node
    node.bash(RUNTIME.sweep_command(site))
    logs = "${HOME}/.apptainer/instances/logs/$(hostname)/$(id -un)"
    node.bash(f"rm -rf {base} {logs}/{site}.*")
    assert node.instances() == [] and node.leftovers() == []


@pytest.fixture
def clean(node):
    yield node
    node.bash(RUNTIME.sweep_command(node.site), check=True)


def test_a_service_runs_as_an_instance_and_stops(clean):
    node = clean
    spec = node.web()
    inst = instance_name(spec.site, spec.name)
    assert node.status(spec).state is State.STOPPED
    started = node.bash(RUNTIME.start_command(spec))
    assert started.returncode == 0, started.stderr
    state = node.status(spec)
    assert state.running and state.answering and state.digest == spec.digest(), state
    assert node.instances() == [inst]
    # the service is the instance's: it carries the marker, apptainer's instance variable and our env
    environ = node.bash(f"tr '\\0' '\\n' < /proc/{state.pid}/environ", check=True).stdout.splitlines()
    assert f"TOPPIPE_SERVICE={spec.marker}" in environ and f"APPTAINER_INSTANCE={inst}" in environ
    assert "RT_GREETING=hello, world" in environ
    page = node.bash(f"python3 -c \"import urllib.request as u; print(u.urlopen('http://{node.address}:{spec.ports[0][1]}/').status)\"")
    assert page.stdout.strip() == "200", page.stderr
    assert str(state.pid) in node.leftovers()
    log = node.bash(f"ls {spec.rundir}; cat {spec.rundir}/log", check=True).stdout
    assert "instance.err" in log and "starting web in instance" in log

    stopped = node.bash(RUNTIME.stop_command(spec))
    assert stopped.returncode == 0, stopped.stderr
    assert node.status(spec).state is State.STOPPED
    assert node.instances() == [] and node.leftovers() == []


def test_start_replaces_a_running_instance(clean):
    node = clean
    spec = node.web()
    assert node.bash(RUNTIME.start_command(spec)).returncode == 0
    first = node.status(spec).pid
    again = node.bash(RUNTIME.start_command(spec))
    assert again.returncode == 0, again.stderr
    second = node.status(spec)
    assert second.answering and second.pid != first
    assert node.instances() == [instance_name(spec.site, spec.name)]


def test_a_service_that_dies_at_start_fails_with_its_log(clean):
    node = clean
    spec = node.spec("broken", ("python3", "-c", "import sys; print('no config here'); sys.exit(3)"),
                     ports=((node.address, node.free_port()),))  # fmt: skip
    result = node.bash(RUNTIME.start_command(spec))
    assert result.returncode == 1
    assert "broken exited while starting" in result.stderr and "no config here" in result.stderr
    assert node.status(spec).state is State.STOPPED and node.instances() == []


def test_a_missing_image_is_named(clean):
    node = clean
    spec = node.spec("noimage", ("true",))
    spec = dataclasses.replace(spec, image=f"{node.base}/absent.sif")
    result = node.bash(RUNTIME.start_command(spec))
    assert result.returncode == 1 and "no image" in result.stderr and "absent.sif" in result.stderr


def test_sweep_leaves_no_instance_and_no_process(clean):
    node = clean
    web = node.web()
    sleeper = node.spec("sleeper", ("python3", "-c", "import time; time.sleep(600)"))
    for spec in (web, sleeper):
        started = node.bash(RUNTIME.start_command(spec))
        assert started.returncode == 0, started.stderr
    assert sorted(node.instances()) == sorted(instance_name(node.site, s.name) for s in (web, sleeper))
    assert node.status(sleeper).running
    t0 = time.monotonic()
    swept = node.bash(RUNTIME.sweep_command(node.site))
    assert swept.returncode == 0, swept.stderr
    assert time.monotonic() - t0 < 30
    assert node.instances() == [] and node.leftovers() == []
    assert node.status(web).state is State.STOPPED and node.status(sleeper).state is State.STOPPED
