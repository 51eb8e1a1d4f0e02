"""``python -m deploy check`` on a real local site: passes when healthy, names what broke, and can fail.

A copy of ``inventories/local`` under its own site name and ports, so this
module runs alongside the others; always taken down with ``--purge``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml

from deploy.checks.tls import tls_checks
from tests.conftest import REPO, marked_pids, run_deploy

pytestmark = pytest.mark.integration

SITE = "checktest"
PORTS = {"scheduler": 28786, "dashboard": 28787, "jupyter": 28888}
SERVICES = ("scheduler", "workers", "jupyter")


def _copy_local(folder: Path, site: str, ports: dict[str, int]) -> Path:
    shutil.copytree(REPO / "inventories" / "local", folder)
    settings_file = folder / "group_vars" / "all.yml"
    settings = yaml.safe_load(settings_file.read_text())
    settings["toppipe"].update(site=site, ports=ports)
    settings_file.write_text(yaml.safe_dump(settings))
    return folder


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The copied local site, up once for this module (checks included); always purged after."""
    root = tmp_path_factory.mktemp("check")
    inventory = _copy_local(root / "inventories" / SITE, SITE, PORTS)
    state = root / "state"
    first = run_deploy("up", str(inventory), state_dir=state)
    try:
        assert first.code == 0, first.stdout + first.stderr
        yield {"inventory": str(inventory), "state": state, "site_state": state / SITE, "first_up": first}
    finally:
        run_deploy("down", str(inventory), "--purge", state_dir=state)
        assert marked_pids(SITE) == []


def _rows(stdout: str) -> list[list[str]]:
    """The report's rows as [host, role, check..., result, detail...] word lists."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:3] == ["host", "role", "check"])
    return [line.split() for line in lines[start + 1 :] if line.strip() and " checks " not in line]


def test_up_runs_the_checks_and_prints_only_the_summary_when_all_pass(site):
    out = site["first_up"].stdout
    summary = next(line for line in out.splitlines() if line.endswith("checks passed"))
    assert int(summary.split()[0]) >= 8
    assert "FAILED" not in out


def test_up_with_no_check_skips_them(site):
    again = run_deploy("up", site["inventory"], "--no-check", state_dir=site["state"])
    assert again.code == 0, again.stdout + again.stderr
    assert "no changes" in again.stdout and "checks" not in again.stdout


def test_check_passes_and_lists_every_service(site):
    result = run_deploy("check", site["inventory"], state_dir=site["state"])
    assert result.code == 0, result.stdout + result.stderr
    rows = _rows(result.stdout)
    for name in SERVICES:
        assert ["localhost", name, "service", name, "ok"] in [row[:5] for row in rows], result.stdout
    checks = {" ".join(row[2:row.index("ok")]) for row in rows}
    assert checks >= {"tls: no client cert refused", "tls: plain tcp refused", "tls: site client cert accepted", "pinned versions", "free disk"}
    assert result.stdout.rstrip().endswith(f"{len(rows)} checks passed")


def test_tls_checks_fail_against_a_plain_echo_server(site):
    tls = site["site_state"] / "tls"
    with EchoServer() as port:
        results = {r.check: r for r in tls_checks("localhost", "127.0.0.1", port, str(tls / "ca.pem"), str(tls / "client.pem"), str(tls / "client.key"))}
    assert not results["tls: no client cert refused"].ok, results
    assert "does not speak TLS" in results["tls: no client cert refused"].detail
    assert not results["tls: plain tcp refused"].ok and "not TLS" in results["tls: plain tcp refused"].detail
    assert not results["tls: site client cert accepted"].ok


def test_tls_check_fails_against_a_server_that_wants_no_client_cert(site):
    tls = site["site_state"] / "tls"
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)  # verify_mode CERT_NONE: anyone may connect
    context.load_cert_chain(tls / "scheduler.pem", tls / "scheduler.key")
    with EchoServer(context, greeting=b"hello") as port:
        results = {r.check: r for r in tls_checks("localhost", "127.0.0.1", port, str(tls / "ca.pem"), str(tls / "client.pem"), str(tls / "client.key"))}
    refused = results["tls: no client cert refused"]
    assert not refused.ok and "accepted a client without a certificate" in refused.detail
    assert results["tls: site client cert accepted"].ok  # the probe itself works against a TLS server


def test_check_names_a_dead_service_and_up_restores_it(site):
    pid = int((site["site_state"] / "services" / "jupyter" / "pid").read_text())
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.1)
    result = run_deploy("check", site["inventory"], state_dir=site["state"])
    assert result.code == 1, result.stdout + result.stderr
    failed = [row for row in _rows(result.stdout) if "FAILED" in row]
    assert [row[:5] for row in failed] == [["localhost", "jupyter", "service", "jupyter", "FAILED"]], result.stdout
    assert "not running" in " ".join(failed[0])
    assert result.stdout.rstrip().endswith(f"1 of {len(_rows(result.stdout))} checks failed")
    again = run_deploy("up", site["inventory"], state_dir=site["state"])
    assert again.code == 0, again.stdout + again.stderr
    assert "checks passed" in again.stdout and "FAILED" not in again.stdout


def test_an_unreachable_host_is_one_failed_result(tmp_path):
    inventory = tmp_path / "inventories" / "ghosts"
    inventory.mkdir(parents=True)
    (inventory / "group_vars").mkdir()
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    hosts = {
        "all": {
            "hosts": {"localhost": {"ansible_connection": "local"}, "ghost": {"ansible_host": "127.0.0.1", "ansible_port": closed_port}},
            "children": {
                "client": {"hosts": {"localhost": None}},
                "scheduler": {"hosts": {"localhost": None}},
                "db": {"hosts": {"localhost": None}},
                "workers": {"hosts": {"ghost": None}},
            },
        }
    }
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts))
    (inventory / "group_vars" / "all.yml").write_text(yaml.safe_dump({"toppipe": {"site": "ghosts", "ports": {"scheduler": 28796, "dashboard": 28797, "jupyter": 28898}}}))
    result = run_deploy("check", str(inventory), state_dir=tmp_path / "state", timeout=60)
    assert result.code == 1 and "Traceback" not in result.stderr, result.stdout + result.stderr
    ghost = [row for row in _rows(result.stdout) if row[0] == "ghost"]
    assert len(ghost) == 1 and ghost[0][:4] == ["ghost", "site", "connect", "FAILED"], result.stdout
    assert "cannot connect:" in " ".join(ghost[0])


class EchoServer:
    """A TCP server on loopback echoing what it receives (over TLS with *context*), after an optional *greeting*."""

    def __init__(self, context: ssl.SSLContext | None = None, greeting: bytes = b""):
        self.context, self.greeting = context, greeting
        self.server = socket.create_server(("127.0.0.1", 0))

    def __enter__(self) -> int:
        threading.Thread(target=self._serve, daemon=True).start()
        return self.server.getsockname()[1]

    def __exit__(self, *exc) -> None:
        self.server.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        try:
            if self.context:
                conn = self.context.wrap_socket(conn, server_side=True)
            if self.greeting:
                conn.sendall(self.greeting)
            while data := conn.recv(4096):
                conn.sendall(data)
        except OSError:
            pass
        finally:
            conn.close()
