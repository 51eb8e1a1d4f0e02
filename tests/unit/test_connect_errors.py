"""Why a host cannot be reached, in one line with the fix, never a traceback.

The pyinfra engine connects with paramiko for real: to a paramiko ssh server
on loopback (host key, public-key auth, commands answered with a home
folder), to a closed port, to a name no DNS knows, with key files that are
missing, no keys or locked by a passphrase.
"""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import threading
from pathlib import Path

import paramiko
import pytest

from deploy.engine.pyinfra_engine import PyinfraEngine
from deploy.inventory import Site, load_site

HOME = "/home/toppipe"


class _Server(paramiko.ServerInterface):
    """Public-key auth for one key; every command prints HOME and exits 0."""

    def __init__(self, allowed: paramiko.PKey):
        self.allowed = allowed
        self.pending: list[paramiko.Channel] = []

    def get_allowed_auths(self, username):
        return "publickey"

    def check_auth_publickey(self, username, key):
        return paramiko.AUTH_SUCCESSFUL if key.get_base64() == self.allowed.get_base64() else paramiko.AUTH_FAILED

    def check_channel_request(self, kind, chanid):
        return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel, command):
        self.pending.append(channel)  # answered once the request's reply is out (see _Transport)
        return True

    def answer_pending(self, remote_chanid: int):
        for channel in [c for c in self.pending if c.remote_chanid == remote_chanid]:
            self.pending.remove(channel)
            channel.sendall(f"{HOME}\n".encode())
            channel.send_exit_status(0)
            channel.close()


class _Transport(paramiko.Transport):
    """Sends an exec's output only after the request's success reply.

    Output and close sent before that reply make the client's exec_command
    fail with "Channel closed." now and then.
    """

    def _send_user_message(self, data):
        super()._send_user_message(data)
        raw = data.asbytes()
        if raw[:1] == paramiko.common.cMSG_CHANNEL_SUCCESS:
            remote_chanid = int.from_bytes(raw[1:5], "big")
            threading.Thread(target=self.server_object.answer_pending, args=(remote_chanid,), daemon=True).start()


def keygen(path: Path, passphrase: str = "") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-f", str(path)], check=True)
    return path


@pytest.fixture
def sshd(tmp_path):
    """A paramiko ssh server on 127.0.0.1: (port, its host key file, the client key it accepts)."""
    host_key = keygen(tmp_path / "host_key")
    client_key = keygen(tmp_path / "id_ed25519")
    listener = socket.create_server(("127.0.0.1", 0))
    transports = []

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            transport = _Transport(conn)
            transport.add_server_key(paramiko.Ed25519Key.from_private_key_file(str(host_key)))
            transport.start_server(server=_Server(paramiko.Ed25519Key.from_private_key_file(str(client_key))))
            transports.append(transport)

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1], host_key, client_key
    listener.close()
    for transport in transports:
        transport.close()


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


def known_hosts(path: Path, port: int, host_key: Path) -> Path:
    kind, blob = (host_key.with_suffix(".pub") if host_key.suffix else Path(f"{host_key}.pub")).read_text().split()[:2]
    path.write_text(f"[127.0.0.1]:{port} {kind} {blob}\n")
    return path


def lab_like_site(folder: Path, port: int, key: Path, known: Path) -> Site:
    """desktop (local), node1 on the server's port, node2 on a closed port; one key and known_hosts for all."""
    (folder / "group_vars").mkdir(parents=True)
    (folder / "hosts.yml").write_text(f"""\
all:
  hosts:
    desktop:
      ansible_connection: local
    node1:
      ansible_host: 127.0.0.1
      ansible_port: {port}
    node2:
      ansible_host: 127.0.0.1
      ansible_port: {closed_port()}
  children:
    client: {{hosts: {{desktop: }}}}
    scheduler: {{hosts: {{desktop: }}}}
    db: {{hosts: {{desktop: }}}}
    workers: {{hosts: {{node1: , node2: }}}}
""")
    (folder / "group_vars" / "all.yml").write_text(f"""\
toppipe:
  site: connect-test
  paths:
    project: .
ansible_user: toppipe
ansible_ssh_private_key_file: {key}
ansible_ssh_common_args: -o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes
""")
    return load_site(folder)


def with_node1(site: Site, **changes) -> Site:
    """*site* with node1 changed after loading (a file that went away, another address)."""
    node1 = dataclasses.replace(site.host("node1"), **changes)
    return dataclasses.replace(site, hosts=tuple(node1 if h.name == "node1" else h for h in site.hosts))


def reasons(site: Site, capfd) -> tuple[dict[str, str], dict[str, str]]:
    """(home folder per reached host, why per unreached host); fails on any traceback on stderr."""
    with PyinfraEngine() as engine:
        homes = engine.home_dirs(site)
        unreachable = engine.unreachable(site)
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
    for why in unreachable.values():
        assert "\n" not in why and why.startswith("cannot connect: "), why
    return homes, unreachable


@pytest.fixture
def site(tmp_path, sshd, monkeypatch) -> Site:
    monkeypatch.setenv("TOPPIPE_STATE_DIR", str(tmp_path / "state"))
    port, host_key, client_key = sshd
    return lab_like_site(tmp_path / "inv", port, client_key, known_hosts(tmp_path / "known_hosts", port, host_key))


def test_a_right_site_connects_and_a_closed_port_says_so(site, capfd):
    homes, unreachable = reasons(site, capfd)
    assert homes == {"node1": HOME}
    port = site.host("node2").port
    assert unreachable == {
        "node2": f"cannot connect: nothing accepts ssh at 127.0.0.1:{port} ([Errno None] Unable to connect to port {port} "
        "on 127.0.0.1); is sshd running there, and ansible_host/ansible_port right?"
    }


def test_a_key_file_gone_after_load_names_it_and_the_other_hosts_still_connect(site, tmp_path, capfd):
    # the case that printed a traceback from inside the ssh connector and left later hosts unconnected
    gone = str(tmp_path / "gone")
    homes, unreachable = reasons(with_node1(site, ssh_key=gone), capfd)
    assert unreachable["node1"] == f"cannot connect: the ssh key file {gone} is missing; fix ansible_ssh_private_key_file"
    assert unreachable["node2"].startswith("cannot connect: nothing accepts ssh at 127.0.0.1:")


def test_a_file_that_only_looks_like_a_key(site, tmp_path, capfd):
    fake = tmp_path / "fake_key"
    fake.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n")
    fake.chmod(0o600)
    site = lab_like_site(tmp_path / "inv2", site.host("node1").port, fake, Path(site.host("node1").known_hosts))
    _, unreachable = reasons(site, capfd)
    assert unreachable["node1"] == (
        f"cannot connect: {fake} is not a private key ssh can read; point ansible_ssh_private_key_file at your private key"
    )


def test_a_key_locked_by_a_passphrase(site, tmp_path, capfd):
    locked = str(keygen(tmp_path / "locked", passphrase="correct horse"))
    _, unreachable = reasons(with_node1(site, ssh_key=locked), capfd)
    assert unreachable["node1"] == f"cannot connect: the ssh key {locked} needs a passphrase, which deploy cannot ask for; use a key without one"


def test_a_key_the_host_does_not_accept(site, tmp_path, capfd):
    other = str(keygen(tmp_path / "other"))
    _, unreachable = reasons(with_node1(site, ssh_key=other), capfd)
    port = site.host("node1").port
    assert unreachable["node1"] == (
        f"cannot connect: toppipe@127.0.0.1:{port} refused the key {other}; add its .pub to authorized_keys there, or fix ansible_user"
    )


def test_a_host_key_that_changed(site, tmp_path, capfd):
    port = site.host("node1").port
    stale = known_hosts(tmp_path / "stale_known_hosts", port, keygen(tmp_path / "old_host_key"))
    _, unreachable = reasons(with_node1(site, known_hosts=str(stale)), capfd)
    assert unreachable["node1"].startswith(f"cannot connect: 127.0.0.1 shows another host key than {stale} holds; ")
    assert f"ssh-keygen -f {stale} -R 127.0.0.1" in unreachable["node1"]


def test_a_host_missing_from_known_hosts(site, tmp_path, capfd):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    _, unreachable = reasons(with_node1(site, known_hosts=str(empty)), capfd)
    assert unreachable["node1"] == f"cannot connect: {empty} has no host key for 127.0.0.1; add it (ssh-keyscan, after checking its fingerprint)"


def test_a_known_hosts_file_gone_after_load(site, tmp_path, capfd):
    gone = tmp_path / "gone_known_hosts"
    _, unreachable = reasons(with_node1(site, known_hosts=str(gone)), capfd)
    assert unreachable["node1"] == f"cannot connect: the known-hosts file {gone} is missing; fix UserKnownHostsFile in ansible_ssh_common_args"


def test_a_name_no_dns_knows(site, capfd):
    _, unreachable = reasons(with_node1(site, address="no-such-host.invalid"), capfd)
    assert unreachable["node1"].startswith("cannot connect: no host is called no-such-host.invalid (")
    assert unreachable["node1"].endswith("); fix ansible_host")


def test_deploy_plan_says_it_in_one_line(site, tmp_path):
    """``python -m deploy`` (gevent-patched, as users run it): the summary line, exit 1, no traceback."""
    from tests.conftest import run_deploy

    fake = tmp_path / "fake_key"
    fake.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n")
    fake.chmod(0o600)
    folder = tmp_path / "inv2"
    lab_like_site(folder, site.host("node1").port, fake, Path(site.host("node1").known_hosts))
    done = run_deploy("plan", str(folder), state_dir=tmp_path / "state", timeout=300)
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    assert done.code == 1, done
    lines = [line for line in done.stdout.splitlines() if line.startswith("  node1 ") and "unreachable" in line]
    assert lines == [f"  node1        unreachable: cannot connect: {fake} is not a private key ssh can read; "
                     "point ansible_ssh_private_key_file at your private key"], done.stdout  # fmt: skip
