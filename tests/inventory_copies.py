"""Copies of a shipped inventory that tests change (one host variable, one setting), still naming the same site."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


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
