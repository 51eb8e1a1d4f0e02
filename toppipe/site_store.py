"""The site's Redis, for small state shared by the notebook and tasks: counters, flags,
parameters, locks.

Redis runs on the db host of sites whose db host runs containers, TLS only, with a
password (roles/redis). The notebook reaches it as its connection record says (the
tunnel's local end on a tunnelled site: :attr:`toppipe.session.Session.store`); a task
on a worker as its dask configuration says (``toppipe.store`` in the site's
``etc/dask/toppipe.yaml``: :func:`toppipe.store`). Either way the server's certificate
is checked against the site CA, host name included (the db host's certificate names
every host address and the loopback).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from toppipe.errors import ToppipeError


@dataclass(frozen=True)
class StoreSettings:
    """Where the site's Redis is, as one process reaches it, and the files that let it in."""

    site: str
    host: str
    port: int
    ca: str
    password_file: str

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def no_redis(site: str, inventory: str = "INVENTORY") -> ToppipeError:
    return ToppipeError(
        f"site {site} runs no Redis (only sites whose db host has runtime: apptainer do); use session.fs "
        f"for shared files, or deploy a site with an apptainer db host (python -m deploy up {inventory})"
    )


def from_record(record: dict) -> StoreSettings:
    """The notebook's way to the site's Redis, from its connection record."""
    site, inventory = record["site"], record.get("inventory", "INVENTORY")
    if "redis" not in record:
        raise ToppipeError(f"the connection record of site {site} predates session.store: run python -m deploy up {inventory}")
    found = record["redis"]
    if not found:
        raise no_redis(site, inventory)
    return StoreSettings(site, found["host"], int(found["port"]), found["ca"], found["password_file"])


def from_config(config: dict | None) -> StoreSettings:
    """A worker's way to the site's Redis, from ``toppipe.store`` of its dask configuration."""
    if not config:
        raise ToppipeError(
            "this process knows no site Redis (no toppipe.store in its dask configuration): call toppipe.store() "
            "in a task on a site whose db host runs Redis, and session.store in the notebook"
        )
    if not config.get("host"):
        raise no_redis(config.get("site", "?"))
    return StoreSettings(config["site"], config["host"], int(config["port"]), config["ca-file"], config["password-file"])


def connect(settings: StoreSettings, **options):
    """A ``redis.Redis`` on the site's Redis (TLS, site CA, password), answering ``str`` unless
    *options* say ``decode_responses=False``; it has answered a PING."""
    import redis

    try:
        password = Path(settings.password_file).read_text().strip()
    except OSError as exc:
        raise ToppipeError(f"cannot read the Redis password of site {settings.site}: {exc}") from None
    client = redis.Redis(
        host=settings.host, port=settings.port, password=password, ssl=True, ssl_ca_certs=settings.ca,
        ssl_cert_reqs="required", ssl_check_hostname=True, socket_connect_timeout=10,
        **{"decode_responses": True, **options},
    )  # fmt: skip
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        raise ToppipeError(f"cannot reach the Redis of site {settings.site} at {settings.address} ({exc}); check the site with python -m deploy status") from None
    return client
