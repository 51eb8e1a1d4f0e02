"""The site dashboard that ``up`` starts on the local site: served by waitress on loopback
only, and nothing answered without its token (pages, Dash's own endpoints, callbacks)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.conftest import run_deploy

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    state = tmp_path_factory.mktemp("dashstate")
    up = run_deploy("up", "inventories/local", state_dir=state)
    assert up.code == 0, up.stdout + up.stderr
    record = json.loads((state / "local" / "connection.json").read_text())
    yield record["app"], open(record["app_token_file"]).read().strip()
    run_deploy("down", "inventories/local", "--purge", state_dir=state)


def answer(url: str, token: str | None = None, data: bytes | None = None) -> tuple[int, str | None]:
    """``(status, Server header)``."""
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers.get("Server")
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Server")


def get(url: str, token: str | None = None, data: bytes | None = None) -> int:
    return answer(url, token, data)[0]


def test_it_listens_on_loopback_only(app):
    assert app[0].startswith("http://127.0.0.1:")


def test_it_is_served_by_waitress_not_the_development_server(app):
    assert answer(app[0] + "_dash-layout", app[1]) == (200, "toppipe-dashboard")  # werkzeug says "Werkzeug/x.y"


@pytest.mark.parametrize("path", ["", "runs", "_dash-layout", "_dash-dependencies", "assets/x.css"])
def test_nothing_is_served_without_the_token(app, path):
    assert get(app[0] + path) == 401


def test_a_callback_without_the_token_is_refused(app):
    assert get(app[0] + "_dash-update-component", data=b"{}") == 401


def test_the_token_opens_it(app):
    url, token = app
    assert get(url + "_dash-layout", token) == 200
    assert get(url + "_dash-layout", "not-the-token") == 401
