"""Loading good inventories: the shipped ones, precedence, pass-through, frozen objects."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from deploy.inventory import InventoryError, load_site, state_dir_for, values
from deploy.inventory.model import REQUIRED_GROUPS
from tests.inventory_copies import copy_lab_with_stand_in_keys

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted(p.parent for p in (ROOT / "inventories").rglob("hosts.yml"))

HOSTS = """\
all:
  hosts:
    localhost:
      ansible_connection: local
    node1:
      ansible_host: 10.0.0.11
    node2:
      ansible_host: 10.0.0.12
  children:
    client:
      hosts:
        localhost:
    scheduler:
      hosts:
        localhost:
    workers:
      hosts:
        node1:
        node2:
    db:
      hosts:
        localhost:
"""

SETTINGS = """\
toppipe:
  site: test
  ports:
    scheduler: 9786
    dashboard: 9787
    jupyter: 9888
  workers:
    per_host: 3
"""


def write_inventory(folder: Path, hosts: str = HOSTS, **files: str) -> Path:
    """An inventory folder; *files* maps "group_vars/all" style names to YAML text."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hosts.yml").write_text(hosts)
    files.setdefault("group_vars/all", SETTINGS)
    for name, text in files.items():
        path = folder / f"{name}.yml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


def with_host_vars(hosts: str, host: str, lines: str) -> str:
    """*hosts* with *lines* (already indented 6) added to all.hosts.<host>."""
    marker = f"    {host}:\n"
    at = hosts.index(marker) + len(marker)
    return hosts[:at] + lines + hosts[at:]


# --- the shipped inventories -------------------------------------------------


def test_there_are_shipped_inventories():
    assert any(p.name == "local" for p in SHIPPED), SHIPPED


def ssh_files(home: Path) -> Path:
    """A user's ~/.ssh with a real private key (ssh-keygen) and a known_hosts file, as the example names."""
    folder = home / ".ssh"
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / "id_ed25519")], check=True)
    (folder / "known_hosts").write_text("")
    return folder


@pytest.mark.parametrize("folder", SHIPPED, ids=[str(p.relative_to(ROOT / "inventories")) for p in SHIPPED])
def test_shipped_inventory_loads(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # the example names the user's own key and known_hosts
    ssh_files(tmp_path)
    if folder.name == "lab":  # the lab's content with stand-in key files: the lab's own exist only while it is up
        folder = copy_lab_with_stand_in_keys(tmp_path / "lab")
    site = load_site(folder)
    assert site.inventory.resolve() == (folder / "hosts.yml").resolve()
    groups = dict(site.groups)
    for group in REQUIRED_GROUPS:
        assert groups.get(group), f"{folder}: group {group} empty or missing"
    assert len(site.group("scheduler")) == 1
    assert len(site.group("client")) == 1
    assert len(site.group("db")) == 1
    assert site.client_host.is_local
    assert site.scheduler_host is site.group("scheduler")[0]
    ports = site.settings.ports
    assert len({ports.scheduler, ports.dashboard, ports.jupyter}) == 3
    assert all(1 <= p <= 65535 for p in (ports.scheduler, ports.dashboard, ports.jupyter))
    names = [h.name for h in site.hosts]
    assert len(names) == len(set(names))
    for host in site.hosts:
        assert host.address
        assert host.workers >= 0
        assert ("workers" in host.groups) or host.workers == 0
    assert any(h.workers > 0 for h in site.group("workers")), "no worker processes at all"
    # Loading from the hosts.yml path gives the same site.
    assert load_site(folder / "hosts.yml") == site


def test_local_inventory_is_all_on_this_machine():
    site = load_site(ROOT / "inventories" / "local")
    assert site.name == "local"
    assert [h.name for h in site.hosts] == ["localhost"]
    host = site.hosts[0]
    assert host.is_local and host.address == site.settings.bind == "127.0.0.1"
    assert set(host.groups) >= set(REQUIRED_GROUPS)
    assert host.workers == site.settings.workers.per_host


# --- precedence -----------------------------------------------------------------


def test_settings_per_host_is_the_default(tmp_path):
    site = load_site(write_inventory(tmp_path / "inv"))
    assert site.host("node1").workers == 3
    assert site.host("node2").workers == 3
    assert site.host("localhost").workers == 0  # not in the workers group


def test_host_var_overrides_settings(tmp_path):
    hosts = with_host_vars(HOSTS, "node1", "      toppipe_workers: 5\n")
    site = load_site(write_inventory(tmp_path / "inv", hosts))
    assert site.host("node1").workers == 5
    assert site.host("node2").workers == 3


def test_group_vars_apply_to_members(tmp_path):
    site = load_site(write_inventory(tmp_path / "inv", **{"group_vars/workers": "toppipe_workers: 4\n"}))
    assert site.host("node1").workers == 4
    assert site.host("node2").workers == 4
    assert site.host("localhost").workers == 0


def test_host_vars_beat_group_vars_beat_all(tmp_path):
    folder = write_inventory(
        tmp_path / "inv",
        **{
            "group_vars/all": SETTINGS + "toppipe_workers: 7\n",
            "group_vars/workers": "toppipe_workers: 4\ntoppipe_runtime: apptainer\n",
            "host_vars/node1": "ansible_host: 10.0.0.11\ntoppipe_workers: 1\n",
        },
    )
    (folder / "hosts.yml").write_text(HOSTS.replace("    node1:\n      ansible_host: 10.0.0.11\n", "    node1:\n"))
    site = load_site(folder)
    assert site.host("node1").workers == 1  # host_vars
    assert site.host("node2").workers == 4  # group_vars/workers.yml over group_vars/all.yml
    assert site.host("node1").runtime == "apptainer"
    assert site.host("localhost").runtime == "native"  # the settings default
    assert site.host("node1").address == "10.0.0.11"


def test_inline_group_vars_apply_to_members(tmp_path):
    hosts = HOSTS.replace("    workers:\n", "    workers:\n      vars:\n        toppipe_workers: 6\n")
    site = load_site(write_inventory(tmp_path / "inv", hosts))
    assert site.host("node1").workers == site.host("node2").workers == 6


def test_host_runtime_overrides_site_runtime(tmp_path):
    hosts = with_host_vars(HOSTS, "node2", "      toppipe_runtime: apptainer\n")
    site = load_site(write_inventory(tmp_path / "inv", hosts))
    assert site.host("node2").runtime == "apptainer"
    assert site.host("node1").runtime == site.settings.runtime == "native"


def test_zero_workers_is_allowed(tmp_path):
    hosts = with_host_vars(HOSTS, "node1", "      toppipe_workers: 0\n")
    site = load_site(write_inventory(tmp_path / "inv", hosts))
    assert site.host("node1").workers == 0


# --- other host variables pass through ------------------------------------------


def test_unknown_host_vars_pass_through(tmp_path):
    hosts = with_host_vars(HOSTS, "node1", "      my_custom_var: 42\n      ansible_become: true\n")
    folder = write_inventory(
        tmp_path / "inv", hosts, **{"group_vars/workers": "ansible_become_user: dask\nntp_servers: [a, b]\n"}
    )
    site = load_site(folder)
    extra = dict(site.host("node1").extra_vars)
    assert extra == {"ansible_become_user": "dask", "ntp_servers": ["a", "b"], "my_custom_var": 42, "ansible_become": True}
    assert dict(site.host("node2").extra_vars) == {"ansible_become_user": "dask", "ntp_servers": ["a", "b"]}
    assert site.host("localhost").extra_vars == ()


def test_known_host_vars_become_fields(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    ssh = ssh_files(tmp_path / "home")
    hosts = with_host_vars(
        HOSTS, "node1", "      ansible_user: deploy\n      ansible_port: 2222\n      ansible_ssh_private_key_file: ~/.ssh/id_ed25519\n"
        "      ansible_ssh_common_args: -o UserKnownHostsFile=~/.ssh/known_hosts -o ProxyJump=me@10.0.0.12:2200\n",
    )
    site = load_site(write_inventory(tmp_path / "inv", hosts))
    host = site.host("node1")
    assert (host.user, host.port, host.connection) == ("deploy", 2222, "ssh")
    # expanded on the client, as ssh does
    assert (host.ssh_key, host.known_hosts) == (str(ssh / "id_ed25519"), str(ssh / "known_hosts"))
    assert host.jump == "me@10.0.0.12:2200"
    assert host.extra_vars == ()


# --- frozen ---------------------------------------------------------------------


def test_objects_are_frozen(tmp_path):
    site = load_site(write_inventory(tmp_path / "inv"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        site.name = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        site.host("node1").workers = 9  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        site.settings.ports.scheduler = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        site.settings.workers.per_host = 1  # type: ignore[misc]
    assert isinstance(site.hosts, tuple) and isinstance(site.groups, tuple)
    assert hash(site.settings) == hash(load_site(tmp_path / "inv").settings)


# --- state folder ---------------------------------------------------------------


def test_state_dir_honours_env(tmp_path, monkeypatch):
    monkeypatch.setenv("TOPPIPE_STATE_DIR", str(tmp_path / "env"))
    assert state_dir_for("test") == tmp_path / "env" / "test"
    assert state_dir_for("test", str(tmp_path / "configured")) == tmp_path / "env" / "test"
    settings = SETTINGS + f"  paths:\n    state: {tmp_path / 'configured'}\n"
    site = load_site(write_inventory(tmp_path / "inv", **{"group_vars/all": settings}))
    assert site.state_dir == tmp_path / "env" / "test"


def test_state_dir_without_env(tmp_path, monkeypatch):
    monkeypatch.delenv("TOPPIPE_STATE_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert state_dir_for("test", str(tmp_path / "configured")) == tmp_path / "configured"
    assert state_dir_for("test") == tmp_path / "xdg" / "toppipe" / "test"
    monkeypatch.setenv("TOPPIPE_STATE_DIR", "")  # empty counts as unset
    assert state_dir_for("test") == tmp_path / "xdg" / "toppipe" / "test"


# --- value rules ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("30", "00:30:00"),  # MM
        ("90", "01:30:00"),
        ("30:15", "00:30:15"),  # MM:SS
        ("01:30:00", "01:30:00"),  # HH:MM:SS
        ("2-12", "2-12:00:00"),  # D-HH
        ("1-00:30", "1-00:30:00"),  # D-HH:MM
        ("1-2:3:4", "1-02:03:04"),  # D-HH:MM:SS
        ("48:00:00", "2-00:00:00"),
    ],
)
def test_walltime_takes_every_slurm_format(written, canonical):
    assert values.walltime(written) == canonical
    # the agent's reading of the canonical form is Slurm's reading of the written one
    from toppipe.rotation import walltime_seconds

    days, _, clock = canonical.rpartition("-")
    hours, minutes, secs = map(int, clock.split(":"))
    assert walltime_seconds(canonical) == int(days or 0) * 86400 + hours * 3600 + minutes * 60 + secs


@pytest.mark.parametrize("written", ["", "1h", "1:2:3:4", "-1", "1-", "1-2-3", "00:00:00", "0", "1:30:00 x", "UNLIMITED"])
def test_walltime_refuses_what_slurm_would_not_take(written):
    with pytest.raises(ValueError, match="Slurm time|no time at all"):
        values.walltime(written)


@pytest.mark.parametrize(
    ("size", "size_bytes"),
    [("2GiB", 2 * 1024**3), ("512MiB", 512 * 1024**2), ("1.5 GB", 1_500_000_000), ("4kB", 4000), ("100B", 100)],
)
def test_memory_sizes_in_dask_units(size, size_bytes):
    from dask.utils import parse_bytes

    assert values.size_bytes(size) == size_bytes == parse_bytes(size)


@pytest.mark.parametrize("size", ["2G", "2 gigs", "GiB", "-1GiB", "2GiB2", "0.5KiB"])
def test_memory_refuses_non_sizes_and_tiny_sizes(size):
    with pytest.raises(ValueError, match="not a size|too little"):
        values.memory(size)


def test_every_port_and_every_size_has_a_rule():
    """A port or a size added to the model later is checked like the others."""
    from deploy.inventory.model import RULE, Ports, SlurmSettings, WorkerSettings

    assert all(f.metadata.get(RULE) is values.port for f in dataclasses.fields(Ports))
    assert WorkerSettings.__dataclass_fields__["memory"].metadata[RULE] is values.memory
    assert SlurmSettings.__dataclass_fields__["memory"].metadata[RULE] is values.memory
    assert SlurmSettings.__dataclass_fields__["walltime"].metadata[RULE] is values.walltime


def test_walltime_is_canonical_after_load(tmp_path):
    settings = SETTINGS + "  slurm:\n    walltime: 2-12\n"
    site = load_site(write_inventory(tmp_path / "inv", **{"group_vars/all": settings}))
    assert site.settings.slurm.walltime == "2-12:00:00"


def _key_case(tmp_path: Path, monkeypatch, make) -> str:
    """The one-line error for node1's key file as *make(folder)* leaves it (folder: a private ~/.ssh)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    ssh = ssh_files(tmp_path / "home")
    make(ssh)
    hosts = with_host_vars(HOSTS, "node1", "      ansible_ssh_private_key_file: ~/.ssh/id_ed25519\n")
    with pytest.raises(InventoryError) as info:
        load_site(write_inventory(tmp_path / "inv", hosts))
    assert info.value.key == "all.hosts.node1.ansible_ssh_private_key_file"
    return str(info.value)


def test_a_public_key_is_not_taken_for_the_private_key(tmp_path, monkeypatch):
    def swap(ssh):
        (ssh / "id_ed25519").write_text((ssh / "id_ed25519.pub").read_text())

    assert "is a public key; name the private key (the file without .pub)" in _key_case(tmp_path, monkeypatch, swap)


def test_a_key_open_to_others_is_refused(tmp_path, monkeypatch):
    message = _key_case(tmp_path, monkeypatch, lambda ssh: (ssh / "id_ed25519").chmod(0o644))
    assert "is open to other users and ssh refuses such keys; chmod 600" in message


def test_a_file_that_is_no_key_is_refused(tmp_path, monkeypatch):
    message = _key_case(tmp_path, monkeypatch, lambda ssh: (ssh / "id_ed25519").write_text("not a key\n"))
    assert "is not an ssh private key" in message


def test_a_folder_is_not_a_key(tmp_path, monkeypatch):
    def folder(ssh):
        (ssh / "id_ed25519").unlink()
        (ssh / "id_ed25519").mkdir()

    assert "is not a file; name the file itself" in _key_case(tmp_path, monkeypatch, folder)


@pytest.mark.parametrize("hop", ["login.example.org", "me@10.0.0.9", "me@gate:2222", "a.example.org,b.example.org:22"])
def test_proxyjump_takes_user_host_port_and_chains(tmp_path, hop):
    hosts = with_host_vars(HOSTS, "node1", f"      ansible_ssh_common_args: -o ProxyJump={hop}\n")
    assert load_site(write_inventory(tmp_path / "inv", hosts)).host("node1").jump == hop


def test_ansible_auto_interpreter_is_not_a_python_path(tmp_path):
    hosts = with_host_vars(HOSTS, "node1", "      ansible_python_interpreter: auto_silent\n")
    hosts = with_host_vars(hosts, "node2", "      ansible_python_interpreter: /usr/bin/python3\n")
    site = load_site(write_inventory(tmp_path / "inv", hosts))
    assert (site.host("node1").python, site.host("node2").python) == (None, "/usr/bin/python3")


def test_a_key_with_a_passphrase_is_refused(tmp_path, monkeypatch):
    def encrypt(ssh):
        key = ssh / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-p", "-N", "a passphrase", "-f", str(key)], check=True, capture_output=True)

    assert "needs a passphrase, which deploy cannot ask for" in _key_case(tmp_path, monkeypatch, encrypt)
