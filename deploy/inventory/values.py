"""Rules for single values of the inventory, attached to the model's fields.

A rule takes the value (already of the field's type) and returns it, maybe in
a canonical form, or raises :class:`ValueError` with the problem and the fix;
the schema turns that into an :class:`InventoryError` naming file and key.
Rules that read the desktop (key files, known-hosts files) say so.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import posixpath
import re
import stat
from collections.abc import Callable
from pathlib import Path

Rule = Callable[[object], object]

#: Slurm's time formats: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS.
_WALLTIME = re.compile(r"(?:(?P<days>\d+)-(?P<dh>\d+)(?::(?P<dm>\d+)(?::(?P<ds>\d+))?)?|(?P<a>\d+)(?::(?P<b>\d+)(?::(?P<c>\d+))?)?)")
_SIZE = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>B|[kKMGTP]i?B)")
_HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")
_USER = re.compile(r"[a-z_][a-z0-9_.-]{0,31}\$?", re.IGNORECASE)
_SLURM_NAME = re.compile(r"[A-Za-z0-9_.+-]+(?:,[A-Za-z0-9_.+-]+)*")
SITE_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")
POOL_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")
_GRES = re.compile(r"[A-Za-z][A-Za-z0-9_-]*(?::[A-Za-z0-9_.-]+)?(?::\d+)?(?:,[A-Za-z][A-Za-z0-9_-]*(?::[A-Za-z0-9_.-]+)?(?::\d+)?)*")
_DIRECTIVE = re.compile(r"--[a-z][a-z-]*(?:=\S+)?")
MIB = 1024**2


def site_name(value: str) -> str:
    if not SITE_NAME.fullmatch(value):
        raise ValueError(f"'{value}' is not a site name; use lowercase letters, digits and '-'")
    return value


def pool_name(value: str) -> str:
    if not POOL_NAME.fullmatch(value):
        raise ValueError(f"'{value}' is not a pool name; use lowercase letters, digits and '-', starting with a letter")
    return value


def gres(value: str) -> str:
    """Slurm's generic resources, ``name[:type][:count]`` joined by commas (e.g. ``gpu:1``)."""
    if not _GRES.fullmatch(value):
        raise ValueError(f"'{value}' is not a Slurm GRES; write name[:type][:count], e.g. gpu:1 or gpu:a100:2")
    return value


def job_directive(value: str) -> str:
    """One extra sbatch option, as ``--name`` or ``--name=value``."""
    if not _DIRECTIVE.fullmatch(value):
        raise ValueError(f"'{value}' is not an sbatch option; write it as --name or --name=value, e.g. --exclusive")
    return value


def at_least(minimum: int, what: str) -> Rule:
    """An integer of *minimum* or more; *what* says why in the message."""

    def rule(value: int) -> int:
        if value < minimum:
            problem = f"{value} is negative" if minimum == 0 else f"{value} {what}"
            raise ValueError(f"{problem}; use {minimum} or more")
        return value

    return rule


def port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError(f"{value} is not a TCP port; use 1-65535")
    return value


def walltime(value: str) -> str:
    """A Slurm time limit, returned as ``[D-]HH:MM:SS`` (what the agent and sbatch read alike)."""
    found = _WALLTIME.fullmatch(value.strip())
    if not found:
        raise ValueError(f"'{value}' is not a Slurm time; write MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS, e.g. 01:30:00")
    part = {k: int(v) for k, v in found.groupdict().items() if v is not None}
    if "days" in part:
        days, hours, minutes, seconds = part["days"], part["dh"], part.get("dm", 0), part.get("ds", 0)
    elif "c" in part:  # HH:MM:SS
        days, hours, minutes, seconds = 0, part["a"], part["b"], part["c"]
    else:  # MM or MM:SS
        days, hours, minutes, seconds = 0, 0, part["a"], part.get("b", 0)
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total == 0:
        raise ValueError(f"'{value}' is no time at all; workers need a walltime, e.g. 01:00:00")
    days, rest = divmod(total, 86400)
    clock = f"{rest // 3600:02d}:{rest // 60 % 60:02d}:{rest % 60:02d}"
    return f"{days}-{clock}" if days else clock


def size_bytes(value: str) -> int:
    """The bytes a size like ``2GiB`` or ``512 MB`` names (dask's units), or ValueError."""
    found = _SIZE.fullmatch(value.strip())
    if not found:
        raise ValueError(f"'{value}' is not a size; write it like 2GiB or 512MiB")
    unit = found["unit"]
    power = 0 if unit == "B" else "KMGTP".index(unit[0].upper()) + 1
    base = 1024 if unit.endswith("iB") else 1000
    return int(float(found["number"]) * base**power)


def memory(value: str) -> str:
    if size_bytes(value) < MIB:
        raise ValueError(f"'{value}' is too little memory for a worker; give at least 1MiB, e.g. 2GiB")
    return value


def ipv4_address(value: str) -> str:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        raise ValueError(f"'{value}' is not an IPv4 address; use one like 127.0.0.1 (loopback)") from None
    return value


def host_address(value: str) -> str:
    """An ssh host name or IP address."""
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if not _HOSTNAME.fullmatch(value):
        raise ValueError(f"'{value}' is not a host name or IP address; write one like node1.example.org or 10.0.0.11")
    return value


def user_name(value: str) -> str:
    if not _USER.fullmatch(value):
        raise ValueError(f"'{value}' is not a user name; use the login name, e.g. toppipe")
    return value


def slurm_name(value: str) -> str:
    if not _SLURM_NAME.fullmatch(value):
        raise ValueError(f"'{value}' is not a Slurm name; use letters, digits, '_', '.', '-' (a list: a,b)")
    return value


def remote_folder(value: str) -> str:
    """A folder every remote host reads: absolute, no ``~``, no ``..``, not ``/`` itself."""
    if value.startswith("~"):
        raise ValueError(f"'{value}' starts with ~, which each host would read as its own home; write the absolute path, e.g. /home/me/toppipe")
    if not value.startswith("/"):
        raise ValueError(f"'{value}' is relative; hosts need an absolute path, e.g. /srv/toppipe")
    if ".." in value.split("/"):
        raise ValueError(f"'{value}' contains '..'; write the folder it means without it")
    if posixpath.normpath(value) == "/":
        raise ValueError("'/' is the whole filesystem; name a folder of its own, e.g. /srv/toppipe")
    return value


def remote_command(value: str) -> str:
    """A program on a host: an absolute path or a bare name looked up on PATH."""
    if "/" in value and not value.startswith("/"):
        raise ValueError(f"'{value}' is a relative path; write it absolute (e.g. /usr/bin/python3) or as a bare name")
    if any(c.isspace() for c in value):
        raise ValueError(f"'{value}' holds a space; name the program only, e.g. /usr/bin/python3")
    return value


def desktop_path(value: str) -> str:
    """A path on this machine: absolute or from ``~``, returned with ``~`` expanded."""
    expanded = os.path.expanduser(value)
    if not os.path.isabs(expanded):
        raise ValueError(f"'{value}' is relative, so it would depend on the folder deploy runs from; write it absolute or from ~/")
    return expanded


def state_folder(value: str) -> str:
    desktop_path(value)
    return value


def _existing_file(value: str, what: str) -> Path:
    path = Path(desktop_path(value))
    if not path.exists():
        raise ValueError(f"no such {what} on this machine: {path}; create it or fix the path")
    if not path.is_file():
        raise ValueError(f"the {what} {path} is not a file; name the file itself")
    if not os.access(path, os.R_OK):
        raise ValueError(f"cannot read the {what} {path}; make it readable by you (chmod 600)")
    return path


def private_key_file(value: str) -> str:
    """An ssh private key on the desktop: there, readable, private, and a private key."""
    path = _existing_file(value, "ssh key file")
    text = path.read_bytes()[:20000]
    if text.startswith((b"ssh-", b"ecdsa-")):
        raise ValueError(f"{path} is a public key; name the private key (the file without .pub)")
    if not text.startswith(b"-----BEGIN ") or b"PRIVATE KEY-----" not in text.split(b"\n", 1)[0]:
        raise ValueError(f"{path} is not an ssh private key; name a key made by ssh-keygen")
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(f"{path} is open to other users and ssh refuses such keys; chmod 600 {path}")
    if _encrypted(text):
        raise ValueError(f"{path} needs a passphrase, which deploy cannot ask for; name a key without one (ssh-keygen -p -N '' -f KEY)")
    return str(path)


def _encrypted(text: bytes) -> bool:
    """Whether a PEM or OpenSSH private key is protected by a passphrase (its cipher is not 'none')."""
    first, _, rest = text.partition(b"\n")
    if b"ENCRYPTED" in first or b"Proc-Type: 4,ENCRYPTED" in rest:
        return True
    if b"OPENSSH PRIVATE KEY" not in first:
        return False
    try:
        blob = base64.b64decode(b"".join(line for line in rest.splitlines() if not line.startswith(b"-----")))
    except ValueError:
        return False  # unreadable: the engine says so when it loads the key
    magic = b"openssh-key-v1\0"
    if not blob.startswith(magic):
        return False
    length = int.from_bytes(blob[len(magic) : len(magic) + 4], "big")
    return blob[len(magic) + 4 : len(magic) + 4 + length] != b"none"


def known_hosts_file(value: str) -> str:
    return str(_existing_file(value, "known-hosts file"))


def jump_hop(value: str) -> str:
    """One hop of ``ProxyJump``: ``[user@]host[:port]``."""
    user, _, hostport = value.rpartition("@")
    host, colon, number = hostport.partition(":") if hostport.count(":") == 1 else (hostport, "", "")
    try:
        if not host or value.lower() == "none":
            raise ValueError("no host")
        if user:
            user_name(user)
        host_address(host)
        if colon:
            port(int(number))
    except ValueError:
        raise ValueError(f"ProxyJump={value} names no host to jump through; write [user@]host[:port], e.g. ProxyJump=login.example.org") from None
    return value
