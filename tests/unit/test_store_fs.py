"""session.store and session.fs: what the connection record and the hosts' dask configuration
say about reaching the site's Redis and folder, the ssh behind session.fs, the local site's
folder view, and the one-line errors. No site is started (tests/lab covers the lab's)."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pandas as pd
import paramiko
import pytest
import yaml

from deploy import lifecycle
from deploy.inventory import load_site
from deploy.state import site_files
from roles.site import dask_config
from tests.inventory_copies import copy_lab_with_stand_in_keys
from tests.unit.test_tunnel import _Homes
from tests.unit.test_tunnel import _record as connection_record
from toppipe import site_files as files
from toppipe import site_store
from toppipe.errors import ToppipeError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _state(tmp_path, monkeypatch):
    monkeypatch.setenv("TOPPIPE_STATE_DIR", str(tmp_path / "state"))


def _site_and_contexts(folder: Path):
    site = load_site(folder)
    return site, lifecycle.contexts(_Homes(), site, site_files(site), {"source": None})


def _record(folder: Path) -> dict:
    site = load_site(folder)
    return {**connection_record(site), "site": site.name}  # the site's name, as write_connection adds it


def test_the_notebook_reaches_the_labs_redis_at_the_tunnels_end_with_the_clients_ca_and_password(lab_inventory):
    record = _record(lab_inventory)
    settings = site_store.from_record(record)
    assert (settings.host, settings.port) == ("127.0.0.1", 16379)
    assert settings.ca == record["tls"]["ca"] and settings.password_file.endswith("/lab/secrets/redis_password")


def test_reach_direct_reaches_redis_on_the_db_host(tmp_path):
    folder = copy_lab_with_stand_in_keys(tmp_path / "lab")
    settings_file = folder / "group_vars" / "all.yml"
    settings = yaml.safe_load(settings_file.read_text())
    settings["toppipe"]["reach"] = "direct"
    settings_file.write_text(yaml.safe_dump(settings, sort_keys=False))
    assert site_store.from_record(_record(folder)).address == "10.213.7.11:6379"


def test_the_labs_folder_is_its_shared_folder_over_ssh_to_login_with_the_inventorys_settings(lab_inventory):
    found = _record(lab_inventory)["files"]
    assert found["root"] == "/srv/toppipe-lab/shared/lab"
    ssh = found["ssh"]
    assert (ssh["address"], ssh["user"], ssh["jump"]) == ("10.213.7.10", "toppipe", None)
    assert ssh["key"] == str(lab_inventory / "ssh" / "id_ed25519") and ssh["known_hosts"] == str(lab_inventory / "ssh" / "known_hosts")
    assert files.proxy_command(ssh) is None  # login's sshd is reached directly


def test_tasks_on_worker_and_scheduler_hosts_know_redis_and_other_hosts_only_the_site(lab_inventory):
    site, ctxs = _site_and_contexts(lab_inventory)
    store = {name: yaml.safe_load(dask_config(ctx))["toppipe"]["store"] for name, ctx in ctxs.items()}
    node = site_store.from_config(store["node1"])
    assert node.address == "10.213.7.11:6379"
    assert (node.ca, node.password_file) == ("/home/toppipe/.toppipe/lab/tls/ca.pem", "/home/toppipe/.toppipe/lab/secrets/redis_password")
    assert site_store.from_config(store["login"]).address == "10.213.7.11:6379"  # Slurm workers read login's
    assert store["desktop"] == {"site": "lab"}  # the notebook uses the record (the tunnel's end)
    assert "secrets/redis_password" in ctxs["node1"].files


def test_the_local_site_has_no_redis_and_says_so_in_one_line_from_the_notebook_and_from_a_task():
    record = _record(REPO / "inventories" / "local")
    assert record["redis"] is None
    with pytest.raises(ToppipeError, match="site local runs no Redis") as raised:
        site_store.from_record(record)
    assert "\n" not in str(raised.value) and "python -m deploy up" in str(raised.value)
    site, ctxs = _site_and_contexts(REPO / "inventories" / "local")
    config = yaml.safe_load(dask_config(ctxs["localhost"]))["toppipe"]["store"]
    with pytest.raises(ToppipeError, match="site local runs no Redis"):
        site_store.from_config(config)
    with pytest.raises(ToppipeError, match="no toppipe.store in its dask configuration"):
        site_store.from_config(None)


def test_a_record_written_before_store_and_fs_asks_for_deploy_up():
    record = {"site": "lab", "inventory": "/x/lab"}
    with pytest.raises(ToppipeError, match="predates session.store: run python -m deploy up /x/lab"):
        site_store.from_record(record)
    with pytest.raises(ToppipeError, match="predates session.fs"):
        files.open_site_files(record)


def test_a_redis_that_does_not_answer_is_one_line_naming_its_address(tmp_path):
    password = tmp_path / "redis_password"
    password.write_text("secret\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once closed
    settings = site_store.StoreSettings("lab", "127.0.0.1", port, str(tmp_path / "ca.pem"), str(password))
    with pytest.raises(ToppipeError, match=f"cannot reach the Redis of site lab at 127.0.0.1:{port}"):
        site_store.connect(settings)
    with pytest.raises(ToppipeError, match="cannot read the Redis password of site lab"):
        site_store.connect(site_store.StoreSettings("lab", "127.0.0.1", port, "ca.pem", str(tmp_path / "missing")))


@pytest.mark.parametrize(
    ("jump", "tail"),
    [
        ("me@bastion.example.org", ["-W", "10.213.7.10:22", "me@bastion.example.org"]),
        ("me@bastion.example.org:2222", ["-W", "10.213.7.10:22", "ssh://me@bastion.example.org:2222"]),
        ("a.example.org,me@[2001:db8::1]:2200", ["-J", "a.example.org", "-W", "10.213.7.10:22", "ssh://me@[2001:db8::1]:2200"]),
    ],
)
def test_jump_hosts_are_crossed_by_ssh_w_with_the_sites_config_and_strict_host_keys(jump, tail):
    ssh = {"address": "10.213.7.10", "port": None, "jump": jump, "ssh_config": "/state/lab/ssh_config"}
    argv = files.proxy_command(ssh)
    assert argv[:3] == ["ssh", "-F", "/state/lab/ssh_config"] and "StrictHostKeyChecking=yes" in argv and "BatchMode=yes" in argv
    assert argv[-len(tail):] == tail


def test_the_record_of_a_jumped_login_names_its_jump_and_the_sites_ssh_config(tmp_path):
    folder = copy_lab_with_stand_in_keys(tmp_path / "lab")
    hosts = yaml.safe_load((folder / "hosts.yml").read_text())
    hosts["all"]["hosts"]["login"]["ansible_ssh_common_args"] = "-o ProxyJump=me@bastion.example.org -o StrictHostKeyChecking=yes"
    (folder / "hosts.yml").write_text(yaml.safe_dump(hosts))
    ssh = _record(folder)["files"]["ssh"]
    assert ssh["jump"] == "me@bastion.example.org" and ssh["ssh_config"].endswith("/lab/ssh_config")


def _server_with_unknown_key() -> tuple[int, threading.Thread]:
    """An ssh server on the loopback whose host key no known-hosts file holds (one connection)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = listener.accept()
        listener.close()
        with paramiko.Transport(conn) as transport:
            transport.add_server_key(paramiko.Ed25519Key.from_private_key_file(_host_key()))
            try:
                transport.start_server(server=paramiko.ServerInterface())
            except (paramiko.SSHException, EOFError):
                pass
            transport.accept(timeout=5)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


def _host_key() -> str:
    """An ed25519 host key made by ssh-keygen (paramiko cannot make one)."""
    import subprocess
    import tempfile

    folder = tempfile.mkdtemp()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{folder}/key"], check=True)
    return f"{folder}/key"


def test_an_unknown_host_key_is_refused_in_one_line(tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text("")
    port, thread = _server_with_unknown_key()
    record = {"site": "lab", "files": {"root": "/srv/shared/lab", "ssh": {"address": "127.0.0.1", "port": port, "user": "toppipe",
                                                                          "key": None, "known_hosts": str(known), "jump": None}}}  # fmt: skip
    with pytest.raises(ToppipeError, match=r"cannot open the shared folder of site lab over ssh to toppipe@127.0.0.1 \(SSHException: .*not found in known_hosts"):
        files.open_site_files(record)
    thread.join(timeout=10)


@pytest.fixture
def local_folders(tmp_path):
    project, results = tmp_path / "project", tmp_path / "state" / "results"
    (project / "data").mkdir(parents=True)
    (project / "data" / "x.csv").write_text("a,b\n1,2\n3,4\n")
    (results / "ab").mkdir(parents=True)
    (results / "ab" / "abcd.pkl").write_bytes(b"value")
    (tmp_path / "state" / "secrets").mkdir()
    return files.LocalSiteFileSystem({"project": str(project), "results": str(results)})


def test_the_local_sites_folder_holds_its_project_and_results_under_the_shared_folders_names(local_folders):
    fs = local_folders
    assert fs.ls("", detail=False) == ["project", "results"]
    assert [entry["name"] for entry in fs.ls("")] == ["project", "results"]
    assert fs.ls("results/ab", detail=False) == ["results/ab/abcd.pkl"]
    assert fs.find("results") == ["results/ab/abcd.pkl"]
    assert fs.cat("results/ab/abcd.pkl") == b"value"
    assert pd.read_csv(fs.open("project/data/x.csv")).to_dict("list") == {"a": [1, 3], "b": [2, 4]}


def test_the_local_sites_folder_has_nothing_else(local_folders):
    with pytest.raises(FileNotFoundError, match="holds only project, results"):
        local_folders.open("secrets/redis_password")
    with pytest.raises(ValueError, match="escapes the site's folder"):
        local_folders.open("results/../secrets/redis_password")
