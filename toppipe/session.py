"""A session on a deployed site: its dask client and what runs where."""

from __future__ import annotations

import datetime
import html
import socket
import warnings
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dask.config
import yaml

from toppipe import interruptions
from toppipe.errors import RunInterruptedError, SchedulerLostError, ToppipeError

_DEFAULTS = Path(__file__).with_name("toppipe.yaml")


def _load_defaults() -> None:
    with open(_DEFAULTS) as handle:
        dask.config.update_defaults(yaml.safe_load(handle))


_load_defaults()


@dataclass(frozen=True)
class ServiceStatus:
    host: str
    name: str
    ports: tuple[tuple[str, int], ...]
    answering: bool


@dataclass(frozen=True)
class WorkerStatus:
    name: str
    host: str
    address: str
    threads: int
    memory_limit: int


@dataclass(frozen=True)
class WorkerInfo:
    """One dask worker: where it runs, since when, and its Slurm job if any."""

    name: str
    host: str
    address: str
    slurm_job: str | None
    since: datetime.datetime | None
    threads: int
    memory_limit: int
    pool: str | None = None


@dataclass(frozen=True)
class PoolInfo:
    """One worker pool of the site: what its workers offer, how many there are, and its limits."""

    name: str
    kind: str  # "slurm" or "hosts"
    offers: dict  # the dask resources each worker offers, beyond its pool and kind
    workers: int
    pending_jobs: int
    limits: dict  # Slurm: partition, max_jobs, walltime; hosts: the inventory's workers per host
    adaptive: tuple | None = None

    @classmethod
    def from_agent(cls, found: dict) -> PoolInfo:
        offers = {k: v for k, v in found["offer"].items() if not k.startswith("pool:") and k not in ("slurm", "host")}
        if found["kind"] == "slurm":
            limits = {"partition": found.get("partition"), "max_jobs": found["max_jobs"], "walltime": found["walltime"]}
        else:
            limits = {"per_host": dict(found.get("hosts") or {})}
        adaptive = (found["adaptive"]["minimum"], found["adaptive"]["maximum"]) if found.get("adaptive") else None
        return cls(found["name"], found["kind"], offers, found["workers"], found["pending_jobs"], limits, adaptive)


@dataclass(frozen=True)
class SiteStatus:
    site: str
    scheduler: str
    services: tuple[ServiceStatus, ...]
    workers: tuple[WorkerStatus, ...]

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(s.host)}</td><td>{html.escape(s.name)}</td><td>{'up' if s.answering else 'DOWN'}</td></tr>"
            for s in self.services
        )
        workers = "".join(
            f"<tr><td>{html.escape(w.host)}</td><td>{html.escape(w.name)}</td><td>{w.threads}</td></tr>" for w in self.workers
        )
        return (
            f"<b>site {html.escape(self.site)}</b> scheduler <code>{html.escape(self.scheduler)}</code>"
            f"<table><tr><th>host</th><th>service</th><th>state</th></tr>{rows}</table>"
            f"<table><tr><th>host</th><th>worker</th><th>threads</th></tr>{workers}</table>"
        )


def record_path(site: str) -> Path:
    """Where the connection record of *site* (a name or an inventory folder) lives."""
    from deploy.inventory.model import state_dir_for

    folder = Path(site)
    if (folder / "hosts.yml").is_file():
        from deploy.inventory import InventoryError, load_site

        try:
            return load_site(folder).state_dir / "connection.json"
        except InventoryError as exc:
            raise ToppipeError(str(exc)) from None
    return state_dir_for(site) / "connection.json"


def _port_open(address: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def _only_python_patch_differs(warning: warnings.WarningMessage) -> bool:
    """True for dask's version warning when only Python's patch level differs (3.11.7 vs 3.11.2)."""
    if warning.category.__name__ != "VersionMismatchWarning":
        return False
    rows = [line for line in str(warning.message).splitlines() if line.startswith("|") and "Package" not in line]
    if not rows or any(row.split("|")[1].strip() != "python" for row in rows):
        return False
    cells = [cell.strip() for cell in rows[0].split("|")[2:-1] if cell.strip() not in ("", "None")]
    minors = {".".join(cell.split(".")[:2]) for cell in cells}
    return len(minors) == 1


#: Seconds between two attempts to reach a scheduler whose tunnel end answers but whose far end does not (yet).
RETRY_SECONDS = 0.5


class Session:
    """A connection to one site. Use as a context manager or call :meth:`close`."""

    def __init__(self, record: dict, client):
        self.record = record
        self.site = record["site"]
        self.client = client
        self._store = self._fs = None  # made at first use

    @classmethod
    def open(cls, site: str, timeout: float | None = None) -> Session:
        from distributed import Client

        from toppipe.cluster import SiteCluster, load_record

        from dask.utils import parse_timedelta

        record = load_record(site)
        wait = timeout if timeout is not None else dask.config.get("toppipe.connect-timeout")
        deadline = time.monotonic() + parse_timedelta(wait)
        try:
            while True:
                try:
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        # client.cluster: scale/adapt go to the site agent; closing it (or client.shutdown()) leaves the site up
                        client = Client(SiteCluster(record=record, timeout=wait), timeout=wait, set_as_default=True)
                    break
                except (OSError, ValueError) as exc:
                    # through a tunnel, a scheduler that does not listen (yet) closes the connection before
                    # TLS or during dask's handshake; dask retries a refused connection within the timeout,
                    # so these are retried too (not when the tunnel itself is closed)
                    retried = isinstance(exc, OSError) or interruptions.closed_before_tls(exc)
                    if not retried or time.monotonic() + RETRY_SECONDS > deadline or interruptions.tunnel_closed(record):
                        raise
                    time.sleep(RETRY_SECONDS)
            for warning in caught:
                if not _only_python_patch_differs(warning):
                    warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        except (OSError, ValueError) as exc:
            if isinstance(exc, ValueError) and not interruptions.closed_before_tls(exc):
                raise
            if interruptions.tunnel_closed(record):
                raise interruptions.tunnel_error(record) from None
            raise ToppipeError(
                f"cannot reach the scheduler of site '{record['site']}' at {record['scheduler']} ({exc}); "
                f"check it with: python -m deploy status {record['inventory']}"
            ) from None
        interruptions.quiet_dask_loss_logs()  # a lost scheduler is raised once, as a toppipe error
        session = cls(record, client)
        session.check_parity()
        return session

    @contextmanager
    def guard_scheduler(self, run: str | None = None, futures=()):
        """Turn a lost scheduler, however dask reports it, into one toppipe error (naming *run*
        when given, whose *futures* may carry dask's reason)."""
        try:
            yield
        except RunInterruptedError:
            raise
        except SchedulerLostError:
            if run is None:
                raise
            raise interruptions.run_interrupted(self.record, run) from None
        except ToppipeError:
            raise
        except (*interruptions.LOST_ERRORS, ValueError) as error:
            if isinstance(error, OSError) and interruptions.tunnel_closed(self.record):
                raise interruptions.tunnel_error(self.record, run) from None
            if not (interruptions.closed_before_tls(error) or interruptions.scheduler_lost(error, self.client, futures)):
                raise
            raise (interruptions.run_interrupted(self.record, run) if run else interruptions.scheduler_gone(self.record)) from None

    def reconnect(self, timeout: float | None = None) -> Session:
        """A new client on the site's scheduler (after ``deploy up`` brought it back); the old one is closed."""
        fresh = Session.open(self.site, timeout=timeout)
        try:
            self.close()
        except Exception:  # noqa: BLE001 - the old client's scheduler is gone; closing it may complain
            pass
        self.record, self.client = fresh.record, fresh.client
        return self

    def check_parity(self) -> None:
        """Refuse a site whose scheduler or workers run other versions than this client."""
        from toppipe.parity import ASKED, mismatches

        differ = mismatches(self.client.get_versions(packages=list(ASKED)))
        if differ:
            self.close()
            raise ToppipeError(
                f"site '{self.site}' runs other versions than this client: {'; '.join(differ)}. "
                f"Install the pins here (scripts/setup) and on the site (python -m deploy up {self.record['inventory']})"
            )

    def status(self) -> SiteStatus:
        """Services (answering or not) and workers, with the host each runs on."""
        timeout = float(dask.config.get("toppipe.probe-timeout"))
        services = tuple(
            ServiceStatus(
                s["host"], s["name"], tuple(map(tuple, s.get("ports", ()))),
                all(_port_open(a, p, timeout) for a, p in s.get("ports", ())),
            )  # fmt: skip
            for s in self.record["services"]
        )
        listed = self._workers_now()
        by_address = {address: name for name, address in self.record.get("hosts", {}).items()}
        workers = tuple(
            WorkerStatus(
                name=str(w.get("name")),
                host=by_address.get(w.get("host"), w.get("host")),
                address=addr,
                threads=w.get("nthreads", 0),
                memory_limit=w.get("memory_limit", 0),
            )
            for addr, w in sorted(listed.items())
        )
        return SiteStatus(self.site, self.record["scheduler"], services, workers)

    def workers(self) -> list[WorkerInfo]:
        """Every connected worker with its host, pool, Slurm job id and start time."""
        by_address = {address: name for name, address in self.record.get("hosts", {}).items()}
        found = []
        with self.guard_scheduler():
            listed = self.client.sync(self.client.scheduler.toppipe_workers)
        for w in listed:
            since = datetime.datetime.fromtimestamp(w["since"]) if w.get("since") else None
            host = by_address.get(w["host"], w["host"])
            found.append(WorkerInfo(w["name"], host, w["address"], w.get("slurm_job"), since, w["threads"], w["memory_limit"], w.get("pool")))
        return sorted(found, key=lambda w: (w.pool or "", w.host, w.name))

    def history(self, since: float | None = None, limit: int = 720, workers: bool = True) -> list[dict]:
        """The site's recent resource history, sampled by the agent every 10 s for the last 6 hours:
        each sample's ``time``, ``hosts`` and ``workers`` (CPU %, memory bytes), ``throughput``
        (tasks finished per second), ``done``/``failed`` (counts since the agent started) and
        ``slurm`` (jobs pending and running). *since*: seconds since the epoch (default: the last hour)."""
        by_address = {address: name for name, address in self.record.get("hosts", {}).items()}
        after = since if since is not None else time.time() - 3600
        found = self._call("toppipe_history", since=after, limit=limit, workers=workers)
        for entry in found:
            entry["hosts"] = {by_address.get(h, h): v for h, v in entry["hosts"].items()}
            for worker in entry.get("workers", {}).values():
                worker["host"] = by_address.get(worker["host"], worker["host"])
        return found

    def pools(self) -> list[PoolInfo]:
        """Every pool of the site, with its workers, pending Slurm jobs and limits."""
        return [PoolInfo.from_agent(found) for found in self._call("toppipe_pools")]

    def _pool(self, pool: str | None, on: str | None) -> dict:
        """The agent's description of the pool *pool*, or of the first pool of kind *on*."""
        found = self._call("toppipe_pools")
        if pool is None:
            kind = {"slurm": "slurm", "hosts": "hosts", None: "slurm"}.get(on)
            if kind is None:
                raise ToppipeError(f"on={on!r}: use on='slurm' or on='hosts', or name a pool with pool=")
            chosen = next((p for p in found if p["kind"] == kind), None)
            if chosen is None and on is None:
                chosen = next((p for p in found if p["kind"] == "hosts"), None)
            if chosen is None:
                raise ToppipeError(f"site '{self.site}' has no {kind} pool; its pools: {', '.join(p['name'] for p in found)}")
            return chosen
        chosen = next((p for p in found if p["name"] == pool), None)
        if chosen is None:
            raise ToppipeError(f"site '{self.site}' has no pool {pool!r}; its pools: {', '.join(p['name'] for p in found)}")
        return chosen

    def scale(self, n: int, on: str | None = None, *, pool: str | None = None) -> None:
        """Run *n* workers in the pool *pool* (by default the first Slurm pool; ``on="hosts"``: the
        first hosts pool). Other pools keep theirs, and workers that stay are never restarted.

        Slurm workers are kept at *n*, each replaced before its walltime. A hosts pool retires
        workers (idle ones first, data handed over) or starts added ones on its hosts.
        """
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ToppipeError(f"scale({n!r}): give a number of workers, 0 or more")
        chosen = self._pool(pool, on)
        if chosen["kind"] == "slurm":
            self._call("toppipe_scale", n=n, pool=chosen["name"])
        else:
            from toppipe import host_pools

            with self.guard_scheduler():
                self.client.sync(host_pools.scale, self.client.scheduler, self.record, chosen, n)

    def adapt(self, minimum: int = 0, maximum: int = 4, *, pool: str | None = None) -> None:
        """Let the Slurm pool *pool* (by default the first) follow the tasks that need it, between
        *minimum* and *maximum* workers; it goes back to *minimum* when idle. Other pools stay as they are."""
        chosen = self._pool(pool, None if pool else "slurm")
        if chosen["kind"] != "slurm":
            raise ToppipeError(f"pool {chosen['name']!r} is a hosts pool, which does not adapt; scale it with session.scale(n, pool={chosen['name']!r})")
        self._call("toppipe_adapt", minimum=minimum, maximum=maximum, pool=chosen["name"])

    def stop_adapting(self, pool: str | None = None) -> None:
        """Keep the workers the Slurm pool *pool* has, and stop following the load."""
        self._call("toppipe_adapt_stop", pool=pool)

    def _call(self, handler: str, **kwargs):
        try:
            with self.guard_scheduler():
                return self.client.sync(getattr(self.client.scheduler, handler), **kwargs)
        except ValueError as exc:
            raise ToppipeError(str(exc)) from None

    def wait_for_workers(self, n: int, timeout: float = 60) -> None:
        """Block until at least *n* workers are connected."""
        deadline = time.monotonic() + timeout
        while len(self._workers_now()) < n:
            if time.monotonic() > deadline:
                raise ToppipeError(f"fewer than {n} workers joined within {timeout:.0f} s; see python -m deploy status")
            time.sleep(0.2)

    def _workers_now(self) -> dict:
        with self.guard_scheduler():
            if self.client.status != "running":  # scheduler_info() would answer from its last copy
                raise OSError("the client is not connected")
            return self.client.scheduler_info(n_workers=-1)["workers"]

    # -- pipelines ---------------------------------------------------------

    def load(self, source):
        """The pipeline in *source*, bound to this session: a path, a name in the project's
        ``pipelines/``, an importable module (``"mypkg.pipeline"``, installed in the site's
        environment) or the folder of a package (see :mod:`toppipe.pipeline.packages`)."""
        import sys

        from toppipe.pipeline import load

        project = self.record.get("project_local")
        if project and project not in sys.path:
            sys.path.insert(0, project)  # its modules import each other as workers do (the synced copy is on their path)
        pipeline = load(source, project=project)
        pipeline.session = self
        return pipeline

    def run_pipeline(self, pipeline, **options):
        """Start a run of *pipeline* (see :meth:`toppipe.pipeline.Pipeline.run`)."""
        from toppipe.pipeline.launch import start

        return start(self, pipeline, **options)

    def records(self):
        """The site's record store (PostgreSQL on sites with a db host in containers, else SQLite)."""
        from toppipe.records import RecordStore

        if not self.record.get("records"):
            raise ToppipeError(f"site {self.site} keeps no run records; run python -m deploy up again")
        return RecordStore(self.record["records"])

    def runs(self, limit: int = 20, pipeline: str | None = None, state: str | None = None) -> list[dict]:
        """The latest runs from the site's records, newest first."""
        store = self.records()
        try:
            return store.runs(limit=limit, pipeline=pipeline, state=state)
        finally:
            store.close()

    def run(self, run_id: str):
        """Reattach to a run, by id (it may have been started from another notebook)."""
        from toppipe.pipeline.runs import attach

        return attach(self, run_id)

    @property
    def store(self):
        """The site's Redis (a ``redis.Redis`` answering ``str``), over TLS with its password, for
        small state shared with tasks (which use :func:`toppipe.store`); made at first use."""
        if getattr(self, "_store", None) is None:
            from toppipe import site_store

            self._store = site_store.connect(site_store.from_record(self.record))
        return self._store

    @property
    def fs(self):
        """The site's folder as an fsspec filesystem: ``project/...`` and ``results/...``
        (see :mod:`toppipe.site_files`); made at first use."""
        if getattr(self, "_fs", None) is None:
            from toppipe.site_files import open_site_files

            self._fs = open_site_files(self.record)
        return self._fs

    # -- the servers -------------------------------------------------------

    @property
    def control(self):
        """The deploy tool on this site (:class:`toppipe.control.SiteControl`): what the CLI does, journaled the same."""
        from toppipe.control import SiteControl

        return SiteControl(self.record["inventory"], origin="notebook")

    def services(self):
        """Every service on every host, with its health (answering or not) read from the hosts now;
        each has ``start()``, ``stop()``, ``restart()`` and ``logs(tail=N)``. Index it by
        ``"scheduler"`` or ``"host/service"``."""
        from toppipe.site_services import services

        return services(self.control, self)

    def logs(self, target: str, tail: int = 50, follow: bool = False):
        """The last *tail* lines of a log as text; with *follow*, an iterator of its lines that
        goes on as they are written (close it, or stop the loop, to end it).

        *target*: a service (``"scheduler"``), a host's service (``"node1/workers"``), a
        worker's name or address, or a Slurm job id.
        """
        control, workers = self.control, self._log_workers()
        if follow:
            return control.follow_log(target, tail, workers)
        return control.read_log(target, tail, workers)

    def _log_workers(self) -> list:
        from deploy.logs import Worker

        try:
            return [Worker(w.name, w.address, w.host, w.slurm_job) for w in self.workers()]
        except (OSError, ToppipeError):  # the scheduler is down: services and job ids still resolve
            return []

    def down(self, purge: bool = False) -> None:
        """Stop every service of the site as ``python -m deploy down`` does (journaled, progress shown),
        then close this session. *purge* also deletes the site's data, secrets and state."""
        from toppipe.site_services import Progress

        progress = Progress(f"down: site {self.site}")
        self.control.down(progress, purge=purge)
        progress.done("done")
        try:
            self.close()
        except Exception:  # noqa: BLE001 - its scheduler is gone: nothing left to close there
            pass

    @property
    def cluster(self):
        """The site's dask cluster (:class:`toppipe.cluster.SiteCluster`), also ``self.client.cluster``."""
        return self.client.cluster

    def close(self) -> None:
        """Close this session's client and cluster object; the site keeps running."""
        self._close_access()
        try:
            self.client.close()
        except (*interruptions.LOST_ERRORS, ValueError):  # the scheduler is gone: nothing left to close there
            pass
        self.client.cluster.close()

    def _close_access(self) -> None:
        """Close the Redis connection and the ssh connection of :attr:`store` and :attr:`fs`, if made."""
        store, self._store = getattr(self, "_store", None), None
        if store is not None:
            store.close()
        fs, self._fs = getattr(self, "_fs", None), None
        client = getattr(getattr(fs, "fs", None), "client", None)  # the SFTP filesystem's paramiko client
        if client is not None:
            client.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<toppipe.Session site={self.site!r} scheduler={self.record['scheduler']!r}>"

    def _repr_html_(self) -> str:
        links = " · ".join(
            f'<a href="{html.escape(self.record[k])}" target="_blank">{k}</a>' for k in ("dashboard", "jupyter") if k in self.record
        )
        return f"<b>toppipe session</b> on site <code>{html.escape(self.site)}</code>: {links}<br>" + self.status()._repr_html_()

