"""Copies of a shipped inventory that tests change (one host variable, one setting), still naming the same site."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

REPO = Path(__file__).resolve().parent.parent
LAB_SSH_FOLDER = "/var/lib/toppipe-lab/ssh/"  # the lab's key and known_hosts, made by `scripts/lab up`


def copy_inventory(name: str, dest: Path) -> Path:
    """``inventories/<name>`` copied to *dest*, its project folder made absolute so that it still resolves
    to the same folder (services whose definition names it keep their digests)."""
    source = REPO / "inventories" / name
    shutil.copytree(source, dest)
    settings_file = dest / "group_vars" / "all.yml"
    settings = yaml.safe_load(settings_file.read_text())
    paths = settings["toppipe"].setdefault("paths", {})
    paths["project"] = str((source / paths.get("project", "../..")).resolve())
    settings_file.write_text(yaml.safe_dump(settings, sort_keys=False))
    return dest


def copy_lab_with_stand_in_keys(dest: Path) -> Path:
    """``inventories/lab`` copied as copy_inventory does, its ssh key and known_hosts stand-ins in *dest*'s
    ``ssh`` folder (a fresh Ed25519 key, an empty known_hosts): it loads on a machine without the lab."""
    copy_inventory("lab", dest)
    ssh = dest / "ssh"
    ssh.mkdir()
    key = Ed25519PrivateKey.generate().private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption())
    (ssh / "id_ed25519").touch(mode=0o600)
    (ssh / "id_ed25519").write_bytes(key)
    (ssh / "known_hosts").write_text("")
    replaced = 0
    for file in dest.rglob("*.yml"):
        text = file.read_text()
        replaced += text.count(LAB_SSH_FOLDER)
        file.write_text(text.replace(LAB_SSH_FOLDER, f"{ssh}/"))
    if not replaced:
        raise AssertionError(f"inventories/lab no longer names {LAB_SSH_FOLDER}: update LAB_SSH_FOLDER")
    return dest


def set_host_var(inventory: Path, host: str, key: str, value: object | None) -> None:
    """Set (or, with None, remove) a variable of *host* where hosts.yml declares it."""
    hosts_file = inventory / "hosts.yml"
    hosts = yaml.safe_load(hosts_file.read_text())
    variables = hosts["all"]["hosts"][host] or {}
    if value is None:
        variables.pop(key, None)
    else:
        variables[key] = value
    hosts["all"]["hosts"][host] = variables or None
    hosts_file.write_text(yaml.safe_dump(hosts, sort_keys=False))


def copy_lab_as_site(site: str, ports: dict[str, int], dest: Path, **settings: dict) -> Path:
    """``inventories/lab`` copied to *dest* as a site of its own: named *site*, with *ports* of its own
    (the run's shared lab site is up beside it), its project this repository; each of *settings*
    (``workers={...}``) updates that section."""
    shutil.copytree(REPO / "inventories" / "lab", dest)
    settings_file = dest / "group_vars" / "all.yml"
    data = yaml.safe_load(settings_file.read_text())
    toppipe = data["toppipe"]
    toppipe.update(site=site, ports={**toppipe.get("ports", {}), **ports})
    toppipe["paths"]["project"] = str(REPO)
    for section, values in settings.items():
        toppipe[section].update(values)
    settings_file.write_text(yaml.safe_dump(data))
    return dest
