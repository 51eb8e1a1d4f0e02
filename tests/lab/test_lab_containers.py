"""The lab with every service an Apptainer instance (issue 4's acceptance).

One deploy of ``inventories/lab`` (``runtime: apptainer``) in a state folder
of its own: services listed by ``apptainer instance list`` on their hosts,
tasks that see the compute image's filesystem on host and Slurm workers, a
second ``up`` that builds and sends nothing, PostgreSQL rows that survive
``down`` + ``up``, the data services refusing clients without TLS or the
password, and lsyncd carrying a file of the project to the shared folder.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time

import pytest

from deploy import images
from deploy.inventory import load_site
from tests.conftest import REPO, run_deploy

pytestmark = pytest.mark.lab

INVENTORY = "inventories/lab"
#: host -> the instances of site lab it runs
INSTANCES = {
    "desktop": {"lab.jupyter", "lab.lsyncd"},  # the dashboard runs natively, beside deploy
    "login": {"lab.scheduler"},
    "db": {"lab.postgres", "lab.redis"},
    "node1": {"lab.workers"},
    "node2": {"lab.workers"},
}
APPTAINER = "/usr/local/bin/apptainer"
SHARED = "/srv/toppipe-lab/shared"


def connection(state_dir) -> dict:
    return json.loads((state_dir / "lab" / "connection.json").read_text())


def instances(lab, host: str) -> set[str]:
    """Names of the apptainer instances the deploying user has on *host*."""
    if host == "desktop":
        out = subprocess.run([APPTAINER, "-s", "instance", "list", "--json"], capture_output=True, text=True, check=True).stdout
    else:
        out = lab.ssh(host, "apptainer -s instance list --json").stdout
    return {entry["instance"] for entry in json.loads(out)["instances"]}


def test_every_service_is_an_apptainer_instance_on_its_host(lab, site):
    for host, expected in INSTANCES.items():
        found = {name for name in instances(lab, host) if name.startswith("lab.")}
        assert found == expected, f"{host}: {found}"


def test_check_reports_the_image_digest_on_each_host(site, state_dir):
    check = run_deploy("check", INVENTORY, state_dir=state_dir, timeout=300)
    assert check.code == 0, check.stdout + check.stderr
    for host, service, image in (("node1", "workers", "compute"), ("login", "scheduler", "scheduler"),
                                 ("db", "postgres", "postgres"), ("desktop", "jupyter", "client")):  # fmt: skip
        line = next(line for line in check.stdout.splitlines() if line.startswith(host) and " images " in line)
        assert f"{service} {image}-{images.digest(image)}" in line, line


def test_tasks_on_host_and_slurm_workers_run_inside_the_compute_image(session):
    def _where_and_what():  # defined here: pickled by value, workers cannot import tests
        import os
        import socket

        with open("/opt/toppipe/inputs-digest") as digest:  # only the compute image has this file
            return socket.gethostname(), digest.read().strip(), os.environ.get("SLURM_JOB_ID")

    session.wait_for_workers(2)
    session.scale(1, on="slurm")
    try:
        session.wait_for_workers(3, timeout=180)
        seen = session.client.run(_where_and_what)
    finally:
        session.scale(0, on="slurm")
    digest = images.digest("compute")
    assert {d for _, d, _ in seen.values()} == {digest}, seen
    assert {h for h, _, job in seen.values() if job is None} == {"node1", "node2"}, seen
    assert [job for _, _, job in seen.values() if job], f"no Slurm worker: {seen}"


def test_a_second_up_builds_and_sends_nothing(site, state_dir):
    again = run_deploy("up", INVENTORY, state_dir=state_dir, timeout=300)
    assert again.code == 0, again.stdout + again.stderr
    assert "no changes" in again.stdout, again.stdout
    assert "building image" not in again.stdout
    assert not [line for line in again.stdout.splitlines() if " images " in line and "changed" in line]


def test_postgres_refuses_clients_without_tls_or_password(site, state_dir):
    import psycopg

    url = connection(state_dir)["records"]
    with psycopg.connect(url, connect_timeout=10) as db:
        assert db.execute("select 1").fetchone() == (1,)
        assert db.info.pgconn.ssl_in_use
    plain = url.replace("sslmode=verify-full", "sslmode=disable")
    with pytest.raises(psycopg.OperationalError, match="no encryption|reject"):
        psycopg.connect(plain, connect_timeout=10)
    wrong = state_dir / "wrong-pgpass"
    wrong.write_text("*:*:*:toppipe:not-the-password\n")
    wrong.chmod(0o600)
    passfile = str(state_dir / "lab" / "secrets" / "pgpass")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(url.replace(passfile.replace("/", "%2F"), str(wrong).replace("/", "%2F")), connect_timeout=10)


def test_redis_needs_tls_and_the_password(site, state_dir):
    import redis

    state = state_dir / "lab"
    password = (state / "secrets" / "redis_password").read_text().strip()
    # through the tunnel's local end: the certificate is still checked against the site's CA
    # (its name is db's address, not the loopback the desktop connects to)
    address = {"host": "127.0.0.1", "port": 16379}
    tls = {"ssl": True, "ssl_ca_certs": str(state / "tls" / "ca.pem"), "ssl_check_hostname": False, "socket_timeout": 10}
    assert redis.Redis(**address, password=password, **tls).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(**address, **tls).ping()
    with pytest.raises(redis.ConnectionError):
        redis.Redis(**address, password=password, socket_timeout=5).ping()


def test_lsyncd_carries_a_project_file_to_the_shared_folder(lab, site):
    name = f".lsyncd-probe-{secrets.token_hex(4)}"
    local = load_site(REPO / INVENTORY).project_dir / name
    remote = f"{SHARED}/lab/project/{name}"
    try:
        local.write_text("synced\n")
        deadline = time.monotonic() + 20
        while lab.ssh("login", f"cat {remote} 2>/dev/null || true").stdout != "synced\n":
            assert time.monotonic() < deadline, f"{remote} did not appear on login within 20 s"
            time.sleep(0.2)
    finally:
        local.unlink(missing_ok=True)


def test_postgres_rows_survive_down_and_up(lab, site, state_dir):
    import psycopg

    url = connection(state_dir)["records"]
    run_id = f"survivor-{secrets.token_hex(4)}"
    with psycopg.connect(url, connect_timeout=10) as db:
        db.execute("insert into runs (id, pipeline, state, started) values (%s, 'survival', 'done', 1)", (run_id,))
    down = run_deploy("down", INVENTORY, state_dir=state_dir, timeout=300)
    assert down.code == 0, down.stdout + down.stderr
    assert not {n for n in instances(lab, "db") if n.startswith("lab.")}
    up = run_deploy("up", INVENTORY, state_dir=state_dir, timeout=600)
    assert up.code == 0, up.stdout + up.stderr
    with psycopg.connect(connection(state_dir)["records"], connect_timeout=10) as db:
        assert db.execute("select pipeline from runs where id = %s", (run_id,)).fetchone() == ("survival",)
