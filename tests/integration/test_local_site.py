"""The local site for real: up, compute from a notebook, secure, idempotent, down.

Runs the shipped ``inventories/local`` with a private state folder. Tests run
in file order; the last ones take the site down and check nothing is left.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import stat
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import psutil
import pytest
from nbclient import NotebookClient

from tests.conftest import marked_pids, run_deploy

pytestmark = pytest.mark.integration

SITE = "local"
INVENTORY = "inventories/local"
PORTS = (8786, 8787, 8888)


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="module")
def site(state_dir):
    """The local site, brought up once for this module; always taken down after."""
    first = run_deploy("up", INVENTORY, state_dir=state_dir)
    assert first.code == 0, first.stdout + first.stderr
    yield {"state": state_dir / SITE, "first_up": first}
    run_deploy("down", INVENTORY, "--purge", state_dir=state_dir)


def _record(site) -> dict:
    return json.loads((site["state"] / "connection.json").read_text())


def test_up_reports_progress_summary_and_how_to_connect(site):
    out = site["first_up"].stdout
    assert "scheduler  start scheduler" in out and "changed" in out
    assert "localhost" in out.split("host            changed")[1]
    assert 'toppipe.connect("local")' in out


def test_second_up_changes_nothing(site, state_dir):
    again = run_deploy("up", INVENTORY, state_dir=state_dir)
    assert again.code == 0, again.stderr
    assert "no changes" in again.stdout
    row = next(line for line in again.stdout.splitlines() if line.startswith("localhost "))
    changed, unchanged, failed, skipped = map(int, row.split()[1:])
    assert (changed, failed, skipped) == (0, 0, 0) and unchanged > 10


def test_plan_on_a_converged_site_shows_nothing_to_do(site, state_dir):
    plan = run_deploy("plan", INVENTORY, state_dir=state_dir)
    assert plan.code == 0
    assert "up would make 0 changes" in plan.stdout


def test_status_reads_reality(site, state_dir):
    status = run_deploy("status", INVENTORY, state_dir=state_dir)
    assert status.code == 0, status.stdout
    for name in ("scheduler", "workers", "jupyter"):
        assert any(line.split()[1:3] == [name, "running"] for line in status.stdout.splitlines()[1:] if line.strip())


def _notebook(state_dir: Path) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import os, toppipe\nsession = toppipe.connect('local')\nsession.wait_for_workers(2)"),
        nbformat.v4.new_code_cell(
            "from distributed import get_worker\n"
            "def where(i):\n"
            "    return get_worker().name, os.getpid(), i * i\n"
            "results = session.client.gather(session.client.map(where, range(20)))\n"
            "print(sorted({r[0] for r in results}), sum(r[2] for r in results), os.getpid())"
        ),
        nbformat.v4.new_code_cell("session._repr_html_()[:40]"),
        nbformat.v4.new_code_cell("session.close()"),
    ]
    return nb


def test_notebook_connects_and_computes_on_the_workers(site, state_dir):
    nb = _notebook(state_dir)
    env = {**os.environ, "TOPPIPE_STATE_DIR": str(state_dir)}
    client = NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(Path.cwd())}})
    old = dict(os.environ)
    os.environ.update(env)  # the kernel inherits this environment
    try:
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
    printed = nb.cells[1].outputs[0]["text"]
    names, total, kernel_pid = printed.rsplit(" ", 2)
    assert int(total) == sum(i * i for i in range(20))
    assert names == "['localhost-0', 'localhost-1']"
    worker_pids = set(marked_pids(SITE))
    assert int(kernel_pid) not in worker_pids  # the work ran in the site's workers, not the kernel


def test_session_status_names_services_and_workers(site, state_dir, monkeypatch):
    monkeypatch.setenv("TOPPIPE_STATE_DIR", str(state_dir))
    import toppipe

    with toppipe.connect(SITE) as session:
        session.wait_for_workers(2)
        status = session.status()
    assert {s.name for s in status.services} == {"scheduler", "workers", "jupyter", "dashboard"}
    assert all(s.answering for s in status.services)
    assert {w.host for w in status.workers} == {"localhost"} and len(status.workers) == 2


def test_nothing_listens_beyond_loopback(site):
    pids = set(marked_pids(SITE))
    assert pids
    listening = [
        c for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.pid in pids
    ]
    assert listening
    assert {c.laddr.ip for c in listening} == {"127.0.0.1"}, listening


def test_scheduler_refuses_clients_without_the_site_certificate(site):
    ca = str(site["state"] / "tls" / "ca.pem")
    context = ssl.create_default_context(cafile=ca)
    context.check_hostname = False
    with socket.create_connection(("127.0.0.1", 8786), timeout=5) as raw:
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            with context.wrap_socket(raw) as tls:
                tls.sendall(b"\0" * 16)
                if not tls.recv(1):
                    raise ConnectionError("closed by the scheduler")

    from distributed import Client

    with pytest.raises(OSError):
        Client("tcp://127.0.0.1:8786", timeout=3)  # plain tcp


def test_a_client_with_the_site_certificate_is_accepted(site):
    record = _record(site)
    context = ssl.create_default_context(cafile=record["tls"]["ca"])
    context.check_hostname = False
    context.load_cert_chain(record["tls"]["cert"], record["tls"]["key"])
    with socket.create_connection(("127.0.0.1", 8786), timeout=5) as raw, context.wrap_socket(raw) as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_jupyter_needs_its_token(site):
    token = (site["state"] / "secrets" / "jupyter_token").read_text().strip()
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen("http://127.0.0.1:8888/api/kernels", timeout=10)
    assert refused.value.code == 403
    request = urllib.request.Request("http://127.0.0.1:8888/api/kernels", headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def test_secrets_are_private_and_never_printed(site, state_dir):
    root = site["state"]
    token = (root / "secrets" / "jupyter_token").read_text().strip()
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        if path.is_dir():
            assert mode & 0o077 == 0, path
        elif path.suffix in (".key",) or "secrets" in path.parts or path.name.endswith(".json"):
            assert mode == 0o600, path
    printed = site["first_up"].stdout + site["first_up"].stderr
    assert token not in printed
    for journal in (root / "deploys").rglob("*"):
        if journal.is_file():
            assert token not in journal.read_text()
    key = (root / "tls" / "scheduler.key").read_text()
    assert key.splitlines()[1] not in printed
    # nor in a service's log, nor in what python -m deploy logs shows of them
    secrets = [path.read_text().strip() for path in (root / "secrets").iterdir() if path.is_file()]
    secrets = [text for text in secrets + [key.splitlines()[1]] if len(text) >= 8]
    assert token in secrets
    for target in ("scheduler", "workers", "jupyter", "dashboard"):
        shown = run_deploy("logs", INVENTORY, target, "-n", "100000", state_dir=state_dir)
        assert shown.code == 0 and shown.stdout, shown.stderr
        assert not [s for s in secrets if s in shown.stdout + shown.stderr], target
    for log in root.glob("services/*/log*"):
        assert not [s for s in secrets if s in log.read_text()], log


def test_every_run_leaves_a_journal_that_status_reads(site, state_dir):
    journals = sorted((site["state"] / "deploys").iterdir())
    first = journals[0]
    inputs = json.loads((first / "inputs.json").read_text())
    assert inputs["command"] == "up" and inputs["inventory"].endswith("inventories/local")
    events = [json.loads(line) for line in (first / "events.jsonl").read_text().splitlines()]
    assert {e["role"] for e in events} >= {"site", "records", "scheduler", "workers", "jupyter"}
    assert json.loads((first / "status.json").read_text())["exit_code"] == 0
    status = run_deploy("status", INVENTORY, state_dir=state_dir)
    assert "last deploy:" in status.stdout


def test_a_dead_service_is_started_again_by_the_next_up(site, state_dir):
    pid = int((site["state"] / "services" / "jupyter" / "pid").read_text())
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.1)
    status = run_deploy("status", INVENTORY, state_dir=state_dir)
    assert status.code == 3
    again = run_deploy("up", INVENTORY, state_dir=state_dir)
    assert again.code == 0, again.stdout + again.stderr
    changed = [line for line in again.stdout.splitlines() if line.rstrip().endswith("changed")]
    assert len(changed) == 1 and "start jupyter" in changed[0]


def test_down_stops_everything_keeps_data_and_frees_ports(site, state_dir):
    records = site["state"] / "data" / "records.sqlite"
    assert records.is_file()
    down = run_deploy("down", INVENTORY, state_dir=state_dir)
    assert down.code == 0, down.stdout + down.stderr
    assert marked_pids(SITE) == []
    for port in PORTS:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))  # raises if anything still holds the port
    assert records.is_file()
    assert not (site["state"] / "connection.json").exists()
    assert run_deploy("status", INVENTORY, state_dir=state_dir).code == 3


def test_connect_to_a_site_that_is_down_says_how_to_bring_it_up(site, state_dir, monkeypatch):
    monkeypatch.setenv("TOPPIPE_STATE_DIR", str(state_dir))
    import toppipe

    with pytest.raises(toppipe.NotDeployedError, match="python -m deploy up inventories/local"):
        toppipe.connect(SITE)


def test_down_purge_removes_the_data(site, state_dir):
    down = run_deploy("down", INVENTORY, "--purge", state_dir=state_dir)
    assert down.code == 0, down.stdout + down.stderr
    assert not (site["state"] / "data").exists()
    assert not (site["state"] / "tls").exists()
