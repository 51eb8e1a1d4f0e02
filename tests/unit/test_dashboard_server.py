"""The dashboard behind its production server (waitress) on a real socket: the token is
still asked for, pages and callbacks are served by threads, and a port in use is one line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest

from tests.unit.dashboard_fakes import FakeSource
from toppipe.dashboard.app import make_app
from toppipe.dashboard.server import ServerError, make_server

TOKEN = "t0ken-for-server-tests"


@pytest.fixture
def served():
    app = make_app(FakeSource(), TOKEN, poll_interval=0.05)
    server = make_server(app.server, "127.0.0.1", 0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.effective_port}"
    server.trigger.pull_trigger(server.close)  # closed in its own loop's thread: the loop ends
    thread.join(timeout=10)
    assert not thread.is_alive()
    server.task_dispatcher.shutdown()
    app.toppipe.poller.stop()


def fetch(url: str, token: str | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as refused:
        return refused.code, dict(refused.headers), refused.read()


def test_waitress_serves_the_app_and_keeps_its_auth(served):
    status, headers, _ = fetch(served + "/_dash-layout")
    assert status == 401
    status, headers, body = fetch(served + "/", TOKEN)
    assert status == 200 and headers["Server"] == "toppipe-dashboard" and b"_dash-component-suites" in body
    assert headers["X-Frame-Options"] == "DENY"
    assert fetch(served + "/_dash-layout", TOKEN)[0] == 200
    assert fetch(served + "/_dash-layout", "not-the-token")[0] == 401


def test_a_port_in_use_is_one_error_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServerError, match=rf"^dashboard: cannot listen on 127.0.0.1:{port}: the port is in use$"):
            make_server(lambda environ, start: [], "127.0.0.1", port)
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN)
        done = subprocess.run([sys.executable, "-m", "toppipe.dashboard", "--site", "nowhere", "--port", str(port)],
                              env={**os.environ, "TOPPIPE_DASHBOARD_TOKEN_FILE": str(token_file)},
                              capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == f"dashboard: cannot listen on 127.0.0.1:{port}: the port is in use\n"
