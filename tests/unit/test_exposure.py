"""The exposure probes against real servers on loopback: an open HTTP server is caught,
mutual TLS (a dask scheduler's among them) is a refusal; and their parts on recorded bytes."""

from __future__ import annotations

import asyncio
import http.server
import os
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import pytest

from deploy import tls
from deploy.checks.exposure import (
    Answer, Exposure, Listener, SshForwards, judge_listeners, judge_reply, listener_check, parse_listing, parse_ss, probe, site_listeners,
)
from deploy.checks.hosts import Section
from deploy.checks.results import CheckResult

#: Each probe's wait on loopback: replies come in milliseconds here.
QUICK = 0.5


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextmanager
def http_server(context: ssl.SSLContext | None = None):
    """A real HTTP server on a free loopback port (TLS when *context* is given)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A CA and a server certificate for 127.0.0.1, as files."""
    folder = tmp_path_factory.mktemp("tls")
    ca = tls.make_ca("probe")
    server = tls.issue(ca, "scheduler", ["127.0.0.1"])
    for name, data in {"ca.pem": ca.cert_pem, "server.pem": server.cert_pem, "server.key": server.key_pem}.items():
        (folder / name).write_bytes(data)
    return folder


def _server_context(certs, require_client_cert: bool) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs / "server.pem", certs / "server.key")
    if require_client_cert:
        context.load_verify_locations(certs / "ca.pem")
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def test_a_plain_http_server_is_exposed():
    with http_server() as port:
        found = probe("127.0.0.1", port, timeout=QUICK)
    assert found.exposed and found.protection == "exposed"
    assert "answered HTTP without credentials (HTTP/1.0 200 OK)" in found.describe()


def test_https_without_client_certificates_is_exposed(certs):
    with http_server(_server_context(certs, require_client_cert=False)) as port:
        found = probe("127.0.0.1", port, timeout=QUICK)
    assert found.exposed
    assert {a.probe for a in found.answers if a.exposed} == {"tls+http", "tls+redis"}  # both get an HTTP page


def test_https_that_requires_the_site_certificate_refuses(certs):
    with http_server(_server_context(certs, require_client_cert=True)) as port:
        found = probe("127.0.0.1", port, timeout=QUICK)
    assert not found.exposed, found.describe()
    assert found.protection == "mutual TLS", found.describe()


def _scheduler_probe(security) -> object:
    """Probe a real dask scheduler on loopback, started with *security* (None: plain TCP)."""
    from distributed import Scheduler

    async def main():
        protocol = "tls" if security is not None else "tcp"
        async with Scheduler(host="127.0.0.1", port=0, protocol=protocol, security=security, dashboard_address="127.0.0.1:0") as s:
            port = int(s.address.rsplit(":", 1)[1])
            return await asyncio.get_running_loop().run_in_executor(None, probe, "127.0.0.1", port, QUICK)

    return asyncio.run(main())


def test_a_dask_scheduler_with_the_sites_mutual_tls_refuses(certs):
    from distributed.security import Security

    security = Security(
        tls_ca_file=str(certs / "ca.pem"), tls_scheduler_cert=str(certs / "server.pem"),
        tls_scheduler_key=str(certs / "server.key"), require_encryption=True,
    )  # fmt: skip
    found = _scheduler_probe(security)
    assert not found.exposed and found.protection == "mutual TLS", found.describe()


def test_a_dask_scheduler_in_plain_tcp_is_exposed():
    found = _scheduler_probe(None)
    assert found.exposed, found.describe()


def test_a_dask_workers_http_server_is_caught():
    """The listener of issue 13: a worker's health/metrics server answers anyone in plain HTTP."""
    from distributed import Scheduler, Worker

    async def main():
        async with Scheduler(host="127.0.0.1", port=0, dashboard_address="127.0.0.1:0") as s:
            async with Worker(s.address, host="127.0.0.1", dashboard_address="127.0.0.1:0") as w:
                port = w.http_server.port
                return await asyncio.get_running_loop().run_in_executor(None, probe, "127.0.0.1", port, QUICK)

    found = asyncio.run(main())
    assert found.exposed and "answered HTTP without credentials" in found.describe(), found.describe()


#: Stands in for ``ssh -W address:port``: a relay between its stdin/stdout and a TCP connection.
RELAY = """
import os, selectors, socket, sys
conn = socket.create_connection((sys.argv[1], int(sys.argv[2])))
sel = selectors.DefaultSelector()
sel.register(0, selectors.EVENT_READ)
sel.register(conn, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        if key.fileobj == 0:
            data = os.read(0, 65536)
            if not data:
                conn.shutdown(socket.SHUT_WR)
                sel.unregister(0)
            else:
                conn.sendall(data)
        else:
            data = conn.recv(65536)
            if not data:
                sys.exit(0)
            os.write(1, data)
"""


def _relays() -> SshForwards:
    return SshForwards(lambda address, port: [sys.executable, "-c", RELAY, address, str(port)])


def test_probes_through_a_gateways_forwards_judge_as_from_here(certs):
    """A closed site's sockets are probed over the gateway's stdio forwards: TLS and replies work
    on them as on a direct connection, and close() ends every forward still running."""
    forwards = _relays()
    try:
        with http_server() as port:
            plain = probe("127.0.0.1", port, timeout=QUICK, connect=forwards)
        with http_server(_server_context(certs, require_client_cert=True)) as port:
            mutual = probe("127.0.0.1", port, timeout=QUICK, connect=forwards)
    finally:
        forwards.close()
    assert plain.exposed and "answered HTTP without credentials (HTTP/1.0 200 OK)" in plain.describe()
    assert not mutual.exposed and mutual.protection == "mutual TLS", mutual.describe()
    assert forwards._procs == []


def test_a_closed_port_is_no_exposure():
    with http_server() as port:
        pass
    found = probe("127.0.0.1", port, timeout=QUICK)
    assert not found.exposed and "cannot connect" in found.describe()
    assert found.protection == ""  # nothing shows a credential: not proven protected


@contextmanager
def jupyter_server(tmp_path, token: str):
    """JupyterLab, as the site runs it, on a free loopback port, with *token* ('' for none)."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    argv = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", "--ServerApp.password=",
            f"--ServerApp.root_dir={tmp_path}", *(["--allow-root"] if os.geteuid() == 0 else [])]  # fmt: skip
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp_path / "config")}
    server = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()
                assert time.monotonic() < deadline, "jupyter server did not start within 60 s"
                time.sleep(0.2)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_jupyter_with_a_token_asks_for_it_and_without_one_is_exposed(tmp_path):
    with jupyter_server(tmp_path, "s3cret-token") as port:
        guarded = probe("127.0.0.1", port, timeout=QUICK)
    assert not guarded.exposed and guarded.protection == "password", guarded.describe()
    assert "redirects to /login" in guarded.describe()
    with jupyter_server(tmp_path, "") as port:
        open_one = probe("127.0.0.1", port, timeout=QUICK)
    assert open_one.exposed, open_one.describe()


@pytest.mark.parametrize(
    "reply, exposed, why",
    [
        (None, False, "no reply"),
        (b"", False, "closed"),
        (b"\x15\x03\x03\x00\x02\x02\x74", False, "TLS alert"),
        (b"HTTP/1.1 200 OK\r\n\r\nhello", True, "HTTP without credentials"),
        (b"HTTP/1.1 403 Forbidden\r\n\r\n", False, "asks for credentials"),
        (b"+PONG\r\n", True, "without credentials"),
        (b"-NOAUTH Authentication required.\r\n", False, "password"),
        (b"R" + struct.pack("!II", 8, 0), True, "without a password"),
        (b"R" + struct.pack("!II", 23, 10) + b"SCRAM-SHA-256\x00\x00", False, "method 10"),
        (b"E\x00\x00\x00\x30SFATAL\x00C28000\x00Mno pg_hba.conf entry\x00\x00", False, "no pg_hba.conf entry"),
        (b"SSH-2.0-OpenSSH_9.2\r\n", False, "SSH server"),
    ],
)  # fmt: skip
def test_replies_are_judged(reply, exposed, why):
    got_exposed, got_why = judge_reply(reply)
    assert got_exposed is exposed and why in got_why


SS_OUTPUT = """\
LISTEN 0      128    0.0.0.0:22   0.0.0.0:* users:(("sshd",pid=55,fd=4))
LISTEN 0      4096   0.0.0.0:6818 0.0.0.0:* users:(("slurmd",pid=65,fd=7))
LISTEN 0      128       [::]:22      [::]:* users:(("sshd",pid=55,fd=5))
LISTEN 0      2048   10.213.7.21:40123 0.0.0.0:* users:(("python",pid=812,fd=21),("python",pid=813,fd=21))
LISTEN 0      128    127.0.0.1:39771 0.0.0.0:* users:(("python",pid=813,fd=30))
LISTEN 0      128    [::ffff:127.0.0.1]:8888 *:*
LISTEN 0      511          *:6379       *:*
LISTEN 0      4096   127.0.0.53%lo:53 0.0.0.0:*
"""


def test_ss_output_becomes_listeners():
    found = parse_ss(SS_OUTPUT)
    assert [(f.address, f.port) for f in found] == [
        ("0.0.0.0", 22), ("0.0.0.0", 6818), ("::", 22), ("10.213.7.21", 40123), ("127.0.0.1", 39771),
        ("::ffff:127.0.0.1", 8888), ("*", 6379), ("127.0.0.53", 53),
    ]  # fmt: skip
    assert found[3].processes == (("python", 812), ("python", 813))
    assert [f.loopback for f in found] == [False, False, False, False, True, True, False, True]
    assert [f.wildcard for f in found] == [True, True, True, False, False, False, True, False]


LISTING = SS_OUTPUT + "--- markers\n812 lab/workers\n813 lab/workers\n"


def test_the_check_probes_the_sites_sockets_beyond_loopback_only():
    listeners = parse_listing(LISTING)
    assert listeners[3].services == ("lab/workers",) and listeners[0].services == ()
    chosen = site_listeners(listeners, "lab", ports={6379})
    assert [(l.address, l.port) for l in chosen] == [("10.213.7.21", 40123), ("*", 6379)]  # not sshd, slurmd, loopback


def test_the_check_names_the_socket_that_answers_and_passes_refusals():
    worker = Listener("10.213.7.21", 40123, (("python", 812),), ("lab/workers",))
    refused = Exposure("10.213.7.21", 40123, (Answer("tls", False, "handshake done ..., then refused with a TLS alert"),))
    answered = Exposure("10.213.7.21", 40123, (Answer("http", True, "answered HTTP without credentials (HTTP/1.1 200 OK)"),))
    silent = Exposure("10.213.7.21", 40123, (Answer("http", False, "no reply"),))
    assert judge_listeners("node1", [(worker, refused)]) == CheckResult("node1", "site", "listeners", True, "1 mutual TLS")
    failed = judge_listeners("node1", [(worker, refused), (worker, answered)])
    assert not failed.ok and failed.detail.startswith("10.213.7.21:40123 (python pid 812) [lab/workers] answers without credentials: http:")
    assert not judge_listeners("node1", [(worker, silent)]).ok  # refused, but by what? not proven
    assert judge_listeners("node1", []).detail == "none of the site's beyond loopback"
    redis = Exposure("10.213.7.11", 6379, (  # the lab's Redis, as probed: TLS without client certificates, then a password
        Answer("tls", False, "handshake done without a client certificate, then no reply"),
        Answer("tls+redis", False, "handshake done without a client certificate, then asks for the password (-NOAUTH ...)"),
    ))  # fmt: skip
    assert judge_listeners("db", [(worker, redis)]) == CheckResult("db", "site", "listeners", True, "1 password")


def test_a_host_without_ss_fails_the_check_with_the_reason():
    result = listener_check("node1", "10.0.0.1", Section(3, "sh: 1: ss: not found\n"), "lab", set())
    assert not result.ok and "ss: not found" in result.detail
