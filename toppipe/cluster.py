"""The site's dask cluster as a standard ``distributed.deploy.Cluster``.

``session.cluster`` (which is also ``session.client.cluster``) is attached to
the site's scheduler over the site's TLS. ``scale`` and ``adapt`` are
forwarded to the site agent: on a Slurm site they size its Slurm pool; on a
site without Slurm ``scale`` spreads host workers over the workers group (as
``session.scale(n, on="hosts")``) and ``adapt`` says it needs Slurm. Closing
the object (``close()``, ``client.shutdown()``, the sidebar's trash button)
closes only this connection: the site's scheduler and workers keep running.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import dask.config
from dask.utils import typename
from distributed.core import Status, rpc
from distributed.deploy.cluster import Cluster
from distributed.objects import SchedulerInfo
from distributed.utils import Log

from toppipe.errors import NotDeployedError, ToppipeError

logger = logging.getLogger(__name__)

#: Seconds between two looks at the agent's pool (for the live repr and widget).
POOL_REFRESH_SECONDS = 2.0
#: How long get_logs waits for one worker's logs (a worker gone unnoticed keeps the scheduler 30 s).
WORKER_LOG_SECONDS = 5.0


@dataclass(frozen=True)
class PoolState:
    """The site's default pool as the agent reports it (``toppipe_pool``)."""

    slurm: bool
    target: int | None = None
    adaptive: tuple[float, float] | None = None

    @classmethod
    def from_reply(cls, reply: dict) -> PoolState:
        adaptive = reply.get("adaptive")
        return cls(bool(reply["slurm"]), reply.get("target"), (adaptive["minimum"], adaptive["maximum"]) if adaptive else None)


def _count(value: float) -> str:
    return "∞" if value == math.inf else str(int(value))


def scaling_status_html(pool: PoolState | None, workers: int) -> str:
    """The widget's Scaling tab: the pool, its mode and its workers (pure, tested)."""
    if pool is None:
        kind, mode, wanted = "unknown (the agent did not answer yet)", "Manual", None
    elif not pool.slurm:
        kind, mode, wanted = "host workers (no Slurm on this site)", "Manual", None
    else:
        kind, wanted = "Slurm", pool.target
        mode = f"Adaptive ({_count(pool.adaptive[0])} to {_count(pool.adaptive[1])})" if pool.adaptive else "Manual"
    count = str(workers) if wanted is None or wanted == workers else f"{workers} / {wanted}"
    return (
        '<table><tr><td style="text-align: left;">'
        f"Pool: {kind}</td></tr>"
        f'<tr><td style="text-align: left;">Scaling mode: {mode}</td></tr>'
        f'<tr><td style="text-align: left;">Workers: {count}</td></tr></table>'
    )


def load_record(site: str) -> dict:
    """The connection record of *site* (a name or an inventory folder), or NotDeployedError."""
    from toppipe.session import record_path

    path = record_path(site)
    if not path.is_file():
        inventory = site if (Path(site) / "hosts.yml").is_file() else f"inventories/{site}"
        raise NotDeployedError(
            f"site '{site}' is not up (no connection record at {path}); bring it up with: python -m deploy up {inventory}"
        )
    return json.loads(path.read_text())


def site_security(record: dict):
    """The client side of the site's mutual TLS, from its connection record."""
    from distributed.security import Security

    tls = record["tls"]
    return Security(tls_ca_file=tls["ca"], tls_client_cert=tls["cert"], tls_client_key=tls["key"], require_encryption=True)


def site_security_loader(info: dict):
    """dask's ``distributed.client.security-loader``: the site's TLS for ``Client("tls://...")`` when the
    address is the scheduler of a site whose record is in the state folder (what the Dask sidebar's
    "insert client" code needs), else None (dask's default)."""
    from deploy.inventory.model import state_dir_for

    for path in sorted(state_dir_for("any").parent.glob("*/connection.json")):
        record = json.loads(path.read_text())
        if record.get("scheduler") == info.get("address"):
            return site_security(record)
    return None


class SiteAdaptive:
    """What :meth:`SiteCluster.adapt` returns: the range the agent adapts the Slurm pool in.

    ``stop()`` keeps the workers there are and stops following the load. In
    asynchronous code, await it to wait for the agent's answer.
    """

    def __init__(self, cluster: SiteCluster, minimum: float, maximum: float, pending: asyncio.Future | None = None):
        self.cluster = cluster
        self.minimum = minimum
        self.maximum = maximum
        self._pending = pending

    def stop(self):
        return self.cluster.sync(self.cluster._stop_adapting)

    def __await__(self):
        async def settled():
            if self._pending is not None:
                await self._pending
            return self

        return settled().__await__()

    def __repr__(self) -> str:
        return f"<SiteAdaptive minimum={_count(self.minimum)} maximum={_count(self.maximum)}>"


class SiteCluster(Cluster):
    """A deployed site's dask cluster: live repr and widget, scale/adapt through the site
    agent, ``get_logs()``; ``close()`` never stops the site.

    ``SiteCluster("lab")`` reads the site's connection record;
    ``Client(SiteCluster("lab"))`` is what ``toppipe.connect("lab")`` gives as
    ``session.client``.
    """

    def __init__(self, site: str = "local", *, record: dict | None = None, security=None,
                 timeout: float | None = None, asynchronous: bool = False, loop=None):  # fmt: skip
        self.record = record if record is not None else load_record(site)
        self.security = security if security is not None else site_security(self.record)
        self.pool: PoolState | None = None
        self._timeout = timeout if timeout is not None else dask.config.get("toppipe.connect-timeout")
        self._pool_task: asyncio.Task | None = None
        super().__init__(asynchronous=asynchronous, loop=loop, quiet=True, name=self.record["site"])
        if not self.called_from_running_loop:
            self._loop_runner.start()
            try:
                self.sync(self._start)
            except BaseException:
                self.sync(self._close)
                self._loop_runner.stop()
                raise

    def __await__(self):
        async def started():
            if self.status == Status.created:
                await self._start()
            return self

        return started().__await__()

    async def _start(self) -> None:
        from dask.utils import parse_timedelta

        self.status = Status.starting
        self.scheduler_comm = rpc(
            self.record["scheduler"], connection_args=self.security.get_connection_args("client"),
            timeout=parse_timedelta(self._timeout),
        )  # fmt: skip
        await asyncio.wait_for(super()._start(), parse_timedelta(self._timeout))
        self._cluster_info.update(name=self.record["site"], type=typename(type(self)))  # not the agent's SLURMCluster's
        await self._refresh_pool()
        self._pool_task = asyncio.ensure_future(self._keep_pool_fresh())

    async def _sync_cluster_info(self) -> None:
        """Nothing: the scheduler's "cluster-manager-info" is the agent's to keep, not every session's."""

    async def _close(self) -> None:
        # the site's adaptivity is the agent's: closing this object must not stop it (the base class would)
        self._adaptive = None
        if self._pool_task is not None:
            self._pool_task.cancel()
        await super()._close()

    # -- the agent's pool ----------------------------------------------------

    async def _refresh_pool(self) -> PoolState:
        self.pool = PoolState.from_reply(await self.scheduler_comm.toppipe_pool())
        return self.pool

    async def _refresh_workers(self) -> None:
        """Every worker the scheduler has now, into ``scheduler_info`` (what dask's widgets count)."""
        self.scheduler_info = SchedulerInfo(await self.scheduler_comm.identity(n_workers=-1))

    async def _keep_pool_fresh(self) -> None:
        """The pool, and the workers: dask's worker-status stream reaches only the newest cluster
        object of a scheduler (its plugin has one fixed name), so the sidebar's cluster in JupyterLab
        stops hearing of workers once a notebook connects; each looks for itself every few seconds."""
        while self.status == Status.running:
            await asyncio.sleep(POOL_REFRESH_SECONDS)
            try:
                await self._refresh_pool()
                await self._refresh_workers()
            except Exception:  # noqa: BLE001 - a blip; the widget shows the last state until the next look
                logger.debug("the site agent did not answer toppipe_pool", exc_info=True)

    async def _forward(self, handler: str, **arguments):
        try:
            reply = await getattr(self.scheduler_comm, handler)(**arguments)
        except ValueError as exc:  # the agent's own refusal, e.g. no Slurm on this site
            raise ToppipeError(str(exc)) from None
        await self._refresh_pool()
        return reply

    async def _scale(self, n: int) -> None:
        pool = self.pool or await self._refresh_pool()
        if pool.slurm:
            await self._forward("toppipe_scale", n=n)
        else:  # the first hosts pool: retired by the agent, or added by a deploy run here (in a thread)
            from toppipe import host_pools

            hosts = next(p for p in await self.scheduler_comm.toppipe_pools() if p["kind"] == "hosts")
            await host_pools.scale(self.scheduler_comm, self.record, hosts, n)
            await self._wait_for_workers(n, timeout=self._timeout)  # refreshes scheduler_info: the count widgets show

    async def _adapt(self, minimum: float, maximum: float) -> None:
        await self._forward("toppipe_adapt", minimum=minimum, maximum=maximum)

    async def _stop_adapting(self) -> None:
        await self._forward("toppipe_adapt_stop")

    # -- the standard Cluster interface -----------------------------------

    def scale(self, n: int):
        """Run *n* workers: the first Slurm pool's on Slurm sites, else the first hosts pool's (see ``session.scale``)."""
        if not isinstance(n, int) or n < 0:
            raise ToppipeError(f"scale({n!r}): give a number of workers, 0 or more")
        return self.sync(self._scale, n)

    def adapt(self, minimum: float = 0, maximum: float = math.inf, **options) -> SiteAdaptive:
        """Let the site agent keep the Slurm pool between *minimum* and *maximum* workers, following the load."""
        if options:
            raise ToppipeError(
                f"adapt({', '.join(sorted(options))}=...): the site agent sets these itself; pass only minimum and maximum"
            )
        if self.pool is not None and not self.pool.slurm:
            raise ToppipeError(
                f"site '{self.name}' has no Slurm, so there is no pool to adapt: cluster.scale(n) sets its host workers "
                "(until the next deploy up)"
            )
        if self.asynchronous:  # dask-labextension calls adapt without awaiting it
            pending = asyncio.ensure_future(self._adapt(minimum, maximum))
            pending.add_done_callback(_log_failure)
            self._adaptive = SiteAdaptive(self, minimum, maximum, pending)
        else:
            self.sync(self._adapt, minimum, maximum)
            self._adaptive = SiteAdaptive(self, minimum, maximum)
        return self._adaptive

    async def _get_logs(self, cluster=True, scheduler=True, workers=True):
        """dask's, with each worker asked on its own: the scheduler's broadcast fails as a whole on a
        worker that went away unnoticed (after 30 s), so such a worker's entry says so instead."""
        logs = await super()._get_logs(cluster=cluster, scheduler=scheduler, workers=False)
        if workers:
            if workers is True:
                await self._refresh_workers()
                workers = [a for a, w in self.scheduler_info["workers"].items() if w.get("status") == Status.running.name]
            texts = await asyncio.gather(*(self._worker_log(address) for address in workers))
            logs.update({address: Log(text) for address, text in zip(workers, texts)})
        return logs

    async def _worker_log(self, address: str) -> str:
        try:
            found = await asyncio.wait_for(self.scheduler_comm.worker_logs(workers=[address]), WORKER_LOG_SECONDS)
        except (OSError, asyncio.TimeoutError) as exc:
            return f"(no logs: the worker did not answer the scheduler within {WORKER_LOG_SECONDS:.0f} s: {exc!r})"
        return "\n".join(line for _, line in found.get(address, ()))

    @property
    def dashboard_link(self) -> str:
        """The dask dashboard's local end, from the connection record (where a tunnel, once there, puts it)."""
        return self.record.get("dashboard", "")

    def _scaling_status(self) -> str:
        return scaling_status_html(self.pool, len(self.scheduler_info["workers"]))

    def wait_for_workers(self, n_workers: int, timeout: float | None = None) -> None:
        """Block until *n_workers* workers run (dask's own, with a ToppipeError when *timeout* passes)."""
        from distributed.exceptions import WorkerStartTimeoutError

        try:
            return super().wait_for_workers(n_workers, timeout=timeout)
        except WorkerStartTimeoutError as exc:
            raise ToppipeError(f"{exc}; see python -m deploy status {self.record['inventory']}") from None


def _log_failure(future: asyncio.Future) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.error("the site agent refused to adapt: %s", future.exception())


async def sidebar_cluster(site: str, asynchronous: bool = True, record_wait: float = 300) -> SiteCluster:
    """dask-labextension's factory: the cluster of *site*.

    The first ``deploy up`` starts Jupyter before it writes the connection
    record, so this waits up to *record_wait* seconds for the record.
    """
    from toppipe.session import record_path

    deadline = time.monotonic() + record_wait
    while not record_path(site).is_file() and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    return await SiteCluster(site, asynchronous=asynchronous)
