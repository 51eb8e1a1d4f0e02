"""The native runtime's scripts, run for real with bash on a tiny service."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from deploy.resources import ServiceSpec
from deploy.runtime import NativeRuntime, ServiceState, State

RUNTIME = NativeRuntime()


def bash(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def spec(tmp_path):
    port = free_port()
    server = f"import http.server as h; h.HTTPServer(('127.0.0.1', {port}), h.BaseHTTPRequestHandler).serve_forever()"
    spec = ServiceSpec(
        site="rt-test", name="web", argv=(sys.executable, "-c", server), rundir=str(tmp_path / "svc"),
        workdir=str(tmp_path), ports=(("127.0.0.1", port),), start_timeout=20,
    )  # fmt: skip
    yield spec
    bash(RUNTIME.sweep_command("rt-test"))


def status(spec) -> ServiceState:
    return RUNTIME.parse_status(bash(RUNTIME.status_command(spec)).stdout)


def test_parse_status_line():
    state = ServiceState.parse("state=running pid=42 digest=abc started=100 port:127.0.0.1:8786=open port:127.0.0.1:1=closed")
    assert state.state is State.RUNNING and state.pid == 42 and state.digest == "abc"
    assert state.ports == (("127.0.0.1:8786", True), ("127.0.0.1:1", False))
    assert not state.answering and state.busy_ports() == []
    stopped = ServiceState.parse("state=stopped pid= digest= started= port:127.0.0.1:9=open")
    assert stopped.busy_ports() == ["127.0.0.1:9"] and stopped.pid is None


def test_start_status_stop(spec):
    assert status(spec).state is State.STOPPED
    started = bash(RUNTIME.start_command(spec))
    assert started.returncode == 0, started.stderr
    running = status(spec)
    assert running.answering and running.digest == spec.digest()
    stopped = bash(RUNTIME.stop_command(spec))
    assert stopped.returncode == 0
    assert status(spec).state is State.STOPPED
    assert bash(RUNTIME.leftovers_command("rt-test")).stdout.strip() == ""


def test_start_replaces_a_running_instance(spec):
    assert bash(RUNTIME.start_command(spec)).returncode == 0
    first = status(spec).pid
    assert bash(RUNTIME.start_command(spec)).returncode == 0
    second = status(spec).pid
    assert first != second
    assert bash(RUNTIME.leftovers_command("rt-test")).stdout.split() == [str(second)]


def test_a_service_that_dies_at_start_fails_with_its_log(tmp_path):
    spec = ServiceSpec(
        site="rt-test", name="broken", argv=(sys.executable, "-c", "import sys; print('no config here'); sys.exit(3)"),
        rundir=str(tmp_path / "svc"), workdir=str(tmp_path), ports=(("127.0.0.1", free_port()),),
    )  # fmt: skip
    result = bash(RUNTIME.start_command(spec))
    assert result.returncode == 1
    assert "broken exited while starting" in result.stderr and "no config here" in result.stderr


def test_sweep_stops_children_that_carry_the_marker(spec):
    assert bash(RUNTIME.start_command(spec)).returncode == 0
    child = subprocess.Popen(["sleep", "300"], env={"TOPPIPE_SERVICE": "rt-test/other", "PATH": "/usr/bin:/bin"})
    try:
        assert str(child.pid) in bash(RUNTIME.leftovers_command("rt-test")).stdout.split()
        bash(RUNTIME.sweep_command("rt-test"))
        child.wait(timeout=15)
        deadline = time.monotonic() + 5
        while bash(RUNTIME.leftovers_command("rt-test")).stdout.strip() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert bash(RUNTIME.leftovers_command("rt-test")).stdout.strip() == ""
    finally:
        child.kill()


def test_digest_changes_with_the_command():
    a = ServiceSpec(site="s", name="n", argv=("a",), rundir="/r", workdir="/w")
    b = ServiceSpec(site="s", name="n", argv=("b",), rundir="/r", workdir="/w")
    assert a.digest() != b.digest() and a.digest() == ServiceSpec(site="s", name="n", argv=("a",), rundir="/r", workdir="/w").digest()
