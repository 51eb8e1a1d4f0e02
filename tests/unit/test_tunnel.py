"""The client's tunnel to a site it cannot reach directly: which sites get one, what ssh it
runs, its local ports, and the connection record's addresses. Pure logic, no host touched."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import psycopg
import pytest
import yaml

from deploy import lifecycle
from deploy.inventory import InventoryError, load_site
from deploy.state import site_files
from roles import tunnel
from tests.inventory_copies import copy_inventory, copy_lab_with_stand_in_keys
from toppipe import interruptions
from toppipe.errors import TunnelClosedError

REPO = Path(__file__).resolve().parents[2]


class _Homes:
    def home_dirs(self, site):
        return {h.name: "/home/toppipe" for h in site.hosts if not h.is_local}


@pytest.fixture(autouse=True)
def _state(tmp_path, monkeypatch):
    monkeypatch.setenv("TOPPIPE_STATE_DIR", str(tmp_path / "state"))


def _with_settings(tmp_path: Path, name: str, **changes) -> Path:
    """A copy of ``inventories/<name>`` with *changes* to its ``toppipe`` settings."""
    dest = tmp_path / name
    folder = copy_lab_with_stand_in_keys(dest) if name == "lab" else copy_inventory(name, dest)
    file = folder / "group_vars" / "all.yml"
    settings = yaml.safe_load(file.read_text())
    settings["toppipe"].update(changes)
    file.write_text(yaml.safe_dump(settings, sort_keys=False))
    return folder


def _record(site) -> dict:
    ctxs = lifecycle.contexts(_Homes(), site, site_files(site), {"source": None})
    return lifecycle.connection_record(site, ctxs)


def test_a_site_whose_scheduler_is_elsewhere_is_tunnelled_by_default_and_the_local_site_is_not(lab_inventory):
    assert load_site(lab_inventory).tunnelled
    assert not load_site(REPO / "inventories" / "local").tunnelled


def test_the_lab_tunnel_forwards_every_service_the_client_talks_to_clear_of_the_local_sites_ports(lab_inventory):
    lab, local = load_site(lab_inventory), load_site(REPO / "inventories" / "local")
    found = {f.name: f.option() for f in tunnel.forwards(lab)}
    assert found == {
        "scheduler": "127.0.0.1:18786:10.213.7.10:8786",
        "dashboard": "127.0.0.1:18787:127.0.0.1:8787",  # the login node's loopback, where the dashboard listens
        "postgres": "127.0.0.1:15432:10.213.7.11:5432",
        "redis": "127.0.0.1:16379:10.213.7.11:6379",
    }
    local_ports = set(vars(local.settings.ports).values())
    client_ports = {lab.settings.ports.jupyter, lab.settings.ports.app}
    assert not {f.local for f in tunnel.forwards(lab)} & (local_ports | client_ports)


def test_the_tunnel_is_one_strict_ssh_connection_to_the_scheduler_host_that_only_forwards(lab_inventory):
    site = load_site(lab_inventory)
    argv = tunnel.ssh_argv(site)
    login = site.scheduler_host
    assert argv[:2] == ["ssh", "-tt"] and argv[-2:] == [f"{login.user}@{login.address}", tunnel.HOLD_COMMAND]
    options = {argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "-o"}
    assert {"BatchMode=yes", "StrictHostKeyChecking=yes", "ExitOnForwardFailure=yes", "ControlPath=none",
            f"UserKnownHostsFile={lab_inventory / 'ssh' / 'known_hosts'}", "IdentitiesOnly=yes"} <= options  # fmt: skip
    assert any(o.startswith("ServerAliveInterval=") for o in options) and any(o.startswith("ServerAliveCountMax=") for o in options)
    assert argv[argv.index("-i") + 1] == str(lab_inventory / "ssh" / "id_ed25519")
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-L"] == [f.option() for f in tunnel.forwards(site)]


def test_a_jumped_scheduler_host_is_reached_through_its_hops(tmp_path):
    folder = copy_lab_with_stand_in_keys(tmp_path / "lab")
    hosts = yaml.safe_load((folder / "hosts.yml").read_text())
    hosts["all"]["hosts"]["login"]["ansible_ssh_common_args"] = "-o ProxyJump=me@bastion.example.org -o StrictHostKeyChecking=yes"
    (folder / "hosts.yml").write_text(yaml.safe_dump(hosts))
    argv = tunnel.ssh_argv(load_site(folder))
    assert "ProxyJump=me@bastion.example.org" in argv


def test_the_tunnel_is_a_native_service_of_the_client_whose_ports_are_its_local_ends(lab_inventory):
    site = load_site(lab_inventory)
    ctxs = lifecycle.contexts(_Homes(), site, site_files(site), {"source": None})
    found = {(host, spec.name): spec for host, spec in lifecycle.services(site, ctxs)}
    spec = found[(site.client_host.name, "tunnel")]
    assert spec.runtime == "native" and spec.image is None
    assert spec.ports == tuple(("127.0.0.1", f.local) for f in tunnel.forwards(site))
    local = load_site(REPO / "inventories" / "local")
    local_ctxs = lifecycle.contexts(_Homes(), local, site_files(local), {})
    assert "tunnel" not in {spec.name for _, spec in lifecycle.services(local, local_ctxs)}


def test_the_record_of_a_tunnelled_site_names_only_local_ends_and_keeps_tls_names(lab_inventory):
    site = load_site(lab_inventory)
    record = _record(site)
    assert record["reach"] == "tunnel"
    assert record["scheduler"] == "tls://127.0.0.1:18786"
    assert record["dashboard"] == "http://127.0.0.1:18787/status"
    params = psycopg.conninfo.conninfo_to_dict(record["records"])
    # libpq connects to hostaddr and checks the certificate against host (verify-full)
    assert (params["host"], params["hostaddr"], params["port"], params["sslmode"]) == ("10.213.7.11", "127.0.0.1", "15432", "verify-full")
    scheduler = next(s for s in record["services"] if s["name"] == "scheduler")
    assert [tuple(p) for p in scheduler["ports"]] == [("127.0.0.1", 18786), ("127.0.0.1", 18787)]


def test_reach_direct_keeps_the_sites_own_addresses(tmp_path):
    site = load_site(_with_settings(tmp_path, "lab", reach="direct"))
    assert not site.tunnelled
    record = _record(site)
    assert record["reach"] == "direct" and record["scheduler"] == "tls://10.213.7.10:8786"
    assert "hostaddr" not in record["records"] and "tunnel" not in record


@pytest.mark.parametrize(
    ("inventory", "changes", "key", "problem"),
    [
        ("local", {"reach": "tunnel"}, "toppipe.reach", "nothing to tunnel"),
        ("lab", {"reach": "ssh"}, "toppipe.reach", "'ssh' is not allowed"),
        ("lab", {"tunnel": {"offset": 60000}}, "toppipe.tunnel.offset", "is not a TCP port"),
        ("lab", {"tunnel": {"offset": 102}}, "toppipe.tunnel.offset", "is also toppipe.ports.jupyter"),  # 8787 + 102 = 8889
        ("lab", {"tunnel": {"offset": -1}}, "toppipe.tunnel.offset", "use 0 or more"),
    ],
)
def test_reach_and_tunnel_settings_are_checked_at_load(tmp_path, inventory, changes, key, problem):
    with pytest.raises(InventoryError) as caught:
        load_site(_with_settings(tmp_path, inventory, **changes))
    assert f"{key}:" in str(caught.value) and problem in str(caught.value)


def test_a_port_of_the_tunnel_in_use_names_the_offset_to_change(lab_inventory):
    site = load_site(lab_inventory)
    assert lifecycle._port_key(site, 18786) == "toppipe.tunnel.offset"
    assert lifecycle._port_key(site, 8889) == "toppipe.ports.jupyter"


def test_a_closed_tunnel_gives_one_line_naming_up_and_leaves_a_run_going_on():
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    record = {"site": "lab", "inventory": "inventories/lab", "reach": "tunnel", "scheduler": f"tls://127.0.0.1:{port}"}
    assert interruptions.tunnel_closed(record)
    error = interruptions.scheduler_gone(record)
    assert isinstance(error, TunnelClosedError) and "\n" not in str(error)
    assert "tunnel to site lab is closed" in str(error) and "`python -m deploy up inventories/lab`" in str(error)
    run = interruptions.run_interrupted(record, "r1")
    assert isinstance(run, TunnelClosedError) and "toppipe.connect('lab').run('r1')" in str(run) and "goes on" in str(run)
    direct = {**record, "reach": "direct"}
    assert not interruptions.tunnel_closed(direct)
    assert "scheduler of site lab is gone" in str(interruptions.scheduler_gone(direct))


def test_a_tunnel_whose_local_end_closes_right_after_answering_counts_as_closed():
    """A killed ssh closes the connections it carried, then its listening socket: a session that
    asks in between finds a local end that answers once, then no more."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def close_after_first():
        listener.accept()[0].close()
        listener.close()

    threading.Thread(target=close_after_first, daemon=True).start()
    record = {"site": "lab", "reach": "tunnel", "scheduler": f"tls://127.0.0.1:{port}"}
    assert interruptions.tunnel_closed(record)
    with socket.create_server(("127.0.0.1", 0)) as alive:  # one that keeps listening: open
        assert not interruptions.tunnel_closed({**record, "scheduler": f"tls://127.0.0.1:{alive.getsockname()[1]}"})


def test_a_connection_closed_before_tls_is_told_from_other_value_errors():
    """Through a tunnel the TCP connection opens, then closes when nothing listens at the far end:
    tornado then raises this ValueError, which sessions treat as an unreachable scheduler."""
    assert interruptions.closed_before_tls(ValueError("IOStream is not idle; cannot convert to SSL"))
    assert not interruptions.closed_before_tls(ValueError("invalid literal for int()"))
    assert not interruptions.closed_before_tls(OSError("cannot convert to SSL"))
