"""The client-side state of a site: secrets, TLS material, connection record.

Everything lives under ``Site.state_dir`` (private, per user)::

    tls/ca.pem ca.key {scheduler,worker,client,db}.{pem,key}
    secrets/jupyter_token              the client's Jupyter
    secrets/dashboard_token            the site dashboard
    secrets/postgres_password, pgpass  the run records (client, db and scheduler hosts)
    secrets/redis_password             Redis (client, db, scheduler and worker hosts)
    connection.json        what toppipe.connect reads
    deploys/<id>/          one journal per deploy command (see journal.py)
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from deploy import tls
from deploy.files import private_dir, read_json, write_json, write_private
from deploy.inventory import Site


@dataclass(frozen=True)
class SiteFiles:
    """Secret files of the site by relative name, and whether they are new."""

    files: dict[str, bytes]
    created: bool

    def save(self, site: Site) -> None:
        """Write the files that are new or differ, each private."""
        root = site.state_dir
        private_dir(root)
        for name, content in self.files.items():
            path = root / name
            if not path.is_file() or path.read_bytes() != content:
                write_private(path, content)

    def for_host(self, groups) -> dict[str, bytes]:
        """What a host of *groups* receives: TLS for all; every secret for the client, the
        database's to the db and scheduler hosts, Redis's password to worker hosts too; never the CA key."""
        wanted = set() if "client" not in groups else {n for n in self.files if n.startswith("secrets/")}
        if {"db", "scheduler"} & set(groups):
            wanted |= set(DATA_SECRETS)
        if "workers" in groups:  # tasks reach Redis with it (toppipe.store())
            wanted.add("secrets/redis_password")
        return {
            name: content
            for name, content in self.files.items()
            if name != "tls/ca.key" and (not name.startswith("secrets/") or name in wanted)
        }


#: The secrets of the data services, which the db and scheduler hosts receive.
DATA_SECRETS = ("secrets/postgres_password", "secrets/pgpass", "secrets/redis_password")
#: TLS pairs made for the site: dask's three, and the data services' on the db host.
TLS_PAIRS = (*tls.ROLES, "db")


def _pgpass(password: bytes) -> bytes:
    """A libpq password file line for the records user (any host, port and database)."""
    return b"*:*:*:toppipe:" + password.replace(b"\\", b"\\\\").replace(b":", b"\\:") + b"\n"


def site_files(site: Site) -> SiteFiles:
    """Load the site's secrets, making missing ones in memory (see :meth:`SiteFiles.save`)."""
    root = site.state_dir
    names = ["tls/ca.pem", "tls/ca.key", "secrets/jupyter_token", "secrets/dashboard_token", *DATA_SECRETS]
    names += [f"tls/{role}.{ext}" for role in TLS_PAIRS for ext in ("pem", "key")]
    existing = {name: (root / name).read_bytes() for name in names if (root / name).is_file()}
    if len(existing) == len(names):
        return SiteFiles(existing, created=False)
    files = dict(existing)
    if "tls/ca.pem" in files and "tls/ca.key" in files:
        ca = tls.KeyPair(files["tls/ca.pem"], files["tls/ca.key"])
    else:
        ca = tls.make_ca(site.name)
        files = {"tls/ca.pem": ca.cert_pem, "tls/ca.key": ca.key_pem}
    hostnames = ["localhost", "127.0.0.1", site.settings.bind]
    for host in site.hosts:
        hostnames += [host.name, host.address]
    for role in TLS_PAIRS:
        if f"tls/{role}.pem" not in files or f"tls/{role}.key" not in files:
            pair = tls.issue(ca, role, hostnames)
            files[f"tls/{role}.pem"], files[f"tls/{role}.key"] = pair.cert_pem, pair.key_pem
    files.setdefault("secrets/jupyter_token", secrets.token_hex(24).encode())
    files.setdefault("secrets/dashboard_token", secrets.token_hex(24).encode())
    files.setdefault("secrets/postgres_password", secrets.token_hex(24).encode())
    files.setdefault("secrets/redis_password", secrets.token_hex(24).encode())
    files["secrets/pgpass"] = _pgpass(files["secrets/postgres_password"])
    return SiteFiles(files, created=True)


def connection_path(state_dir: Path) -> Path:
    return state_dir / "connection.json"


def write_connection(site: Site, record: dict) -> None:
    write_json(connection_path(site.state_dir), {**record, "site": site.name, "written": time.time()})


def read_connection(state_dir: Path) -> dict | None:
    path = connection_path(state_dir)
    return read_json(path) if path.is_file() else None


def mask(secret: str) -> str:
    """Enough of a secret to recognise it, never enough to use it."""
    return secret[:4] + "…" if len(secret) > 8 else "…"
