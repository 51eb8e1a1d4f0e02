"""The dashboard's view of a real site: the deploy tool for services and actions,
the agent for workers and the Slurm queue, the record store for runs.

Everything a page shows comes through here; the poller calls ``site_view``
(services are asked over ssh, like ``deploy status``), so open pages cost the
site nothing more. Actions go through :mod:`toppipe.control`, journaled like CLI
commands (``deploys/<id>/`` in the site's state folder). Logs are read by the deploy tool's
reader (:mod:`deploy.logs`, as ``python -m deploy logs`` reads them), the site's secrets masked.
"""

from __future__ import annotations

import dataclasses

import json
import socket
import time
from pathlib import Path

from toppipe.dashboard.source import SiteSource
from toppipe.errors import ToppipeError


#: Seconds a log target's place (host, path) is kept before it is looked up again.
TARGET_KEPT_S = 60.0


def site_secrets(state_dir: Path) -> list[str]:
    """What must never be shown: each secret file's text and each line of the TLS keys (8 characters or more)."""
    found = [p.read_text(errors="replace").strip() for p in sorted((state_dir / "secrets").glob("*")) if p.is_file()]
    for key in sorted((state_dir / "tls").glob("*.key")):
        found += [line.strip() for line in key.read_text(errors="replace").splitlines() if "-----" not in line]
    return [s for s in found if len(s) >= 8]


def masked(text: str, secrets: list[str]) -> str:
    """*text* with every secret in it replaced by ``[secret]`` (longest first: one may hold another)."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(secret, "[secret]")
    return text


def local_names() -> set[str]:
    """This machine's host names (short and full)."""
    name = socket.gethostname()
    return {name, name.split(".")[0], socket.getfqdn()}


def inventory_host(host: str, workers_hosts: list[tuple[str, str, bool]], here: set[str]) -> str:
    """The inventory name of the machine a task ran on (*host*: its hostname, as the records keep it),
    among the hosts running workers (``(name, address, local)``): the same name or address, or a local
    host when *host* is this machine, or the only one there is; else *host* itself."""
    for name, address, _ in workers_hosts:
        if host in (name, address) or host.split(".")[0] == name:
            return name
    local = [name for name, _, is_local in workers_hosts if is_local]
    if host in here and local:
        return local[0]
    return workers_hosts[0][0] if len(workers_hosts) == 1 else host


class RealSite(SiteSource):
    """A deployed site, by name (its connection record says where everything is)."""

    def __init__(self, site: str):
        self.name = site
        self._session = None
        self._targets: dict[str, tuple] = {}  # log target -> (when, site, LogTarget)

    # -- connections --------------------------------------------------------

    @property
    def record(self) -> dict:
        """The site's connection record, read each time: ``up`` writes it after this starts."""
        from toppipe.session import record_path

        path = record_path(self.name)
        if not path.is_file():
            raise ToppipeError(f"site {self.name} is not up yet (no {path}); python -m deploy up writes it")
        return json.loads(path.read_text())

    def session(self):
        if self._session is None:
            import toppipe

            self._session = toppipe.connect(self.name)
        return self._session

    def control(self):
        """The deploy tool on this site (:class:`toppipe.control.SiteControl`), found from its record."""
        from toppipe.control import SiteControl

        return SiteControl(self.record["inventory"], origin="dashboard")

    # -- the site -----------------------------------------------------------

    def site_view(self) -> dict:
        site, states, unreachable = self.control().states()
        now, record = time.time(), self.record  # the file is read once per look
        services = [
            {"host": host, "name": name, "healthy": state.answering,
             "detail": "answering" if state.answering else ("running, not answering" if state.running else "stopped"),
             "uptime_s": (now - state.started) if state.running and state.started else None,
             "where": f"instance {site.name}.{name}, pid {state.pid}" if site.host(host).runtime == "apptainer" else f"pid {state.pid}"}
            for (host, name), state in sorted(states.items())
        ]  # fmt: skip
        services += [{"host": h, "name": "(host)", "healthy": False, "detail": why, "uptime_s": None, "where": ""}
                     for h, why in sorted(unreachable.items())]  # fmt: skip
        return {
            "hosts": [{"name": h, "address": a, "reachable": h not in unreachable} for h, a in record["hosts"].items()],
            "services": services,
            "workers": self._workers(),
            "slurm_queue": self._slurm_queue(),
            "pools": self._pools(),
            "history": self._history(),
            "links": {"dask": record["dashboard"], "jupyter": record["jupyter"]},
        }

    def _workers(self) -> list[dict]:
        try:
            session = self.session()
            metrics = session.client.scheduler_info(n_workers=-1)["workers"]
            return [
                {"name": w.name, "host": w.host, "slurm_job": w.slurm_job, "threads": w.threads,
                 "memory": metrics.get(w.address, {}).get("metrics", {}).get("memory"),
                 "cpu": metrics.get(w.address, {}).get("metrics", {}).get("cpu")}
                for w in session.workers()
            ]  # fmt: skip
        except (OSError, ToppipeError):
            self._session = None
            return []

    def _history(self) -> list[dict]:
        try:
            return self.session().history(workers=False)
        except (OSError, ToppipeError):
            return []

    def _pools(self) -> list[dict]:
        try:
            return [dataclasses.asdict(p) for p in self.session().pools()]
        except (OSError, ToppipeError):
            return []

    def _slurm_queue(self) -> list[dict]:
        try:
            return self.session()._call("toppipe_slurm_queue") or []
        except (OSError, ToppipeError):
            return []

    # -- runs ----------------------------------------------------------------

    def _store(self):
        from toppipe.records import RecordStore

        return RecordStore(self.record["records"])

    def _read(self, method: str, *args, **kwargs):
        store = self._store()
        try:
            return getattr(store, method)(*args, **kwargs)
        finally:
            store.close()

    def runs(self, limit: int = 50, offset: int = 0, pipeline: str | None = None, state: str | None = None) -> list[dict]:
        return self._read("runs", limit=limit, offset=offset, pipeline=pipeline, state=state)

    def count_runs(self, pipeline: str | None = None, state: str | None = None) -> int:
        return self._read("count_runs", pipeline=pipeline, state=state)

    def run(self, run_id: str) -> dict | None:
        return self._read("run", run_id)

    def tasks(self, run_id: str) -> list[dict]:
        return self._read("tasks", run_id)

    def plain_tasks(self, run_id: str) -> list[dict]:
        from toppipe.pipeline.summary import run_order

        return run_order(self._read("tasks", run_id, elements=False))

    def summary(self, run_id: str) -> list:
        from toppipe.pipeline import summary

        store = self._store()
        try:
            return summary.read(store, run_id)
        finally:
            store.close()

    def elements(self, run_id: str, task: str, state: str | None = None, limit: int = 50, offset: int = 0) -> list[dict]:
        return self._read("elements", run_id, task, state=state, limit=limit, offset=offset)

    def failures(self, run_id: str, limit: int) -> list[dict]:
        return self._read("tasks", run_id, state="failed", limit=limit)

    def graph(self, run_id: str):
        """The run's pipeline, without code, from the graph its provenance keeps."""
        from toppipe.pipeline import Pipeline

        found = self.run(run_id)
        graph = (found or {}).get("provenance", {}).get("graph")
        return Pipeline.skeleton(found["pipeline"], graph) if graph else None

    def graph_svg(self, run_id: str) -> str | None:
        from toppipe.pipeline.render import PALETTE, svg

        pipeline = self.graph(run_id)
        if pipeline is None:
            return None
        return svg(pipeline, {t["name"]: t["state"] for t in self.plain_tasks(run_id) if t["state"] in PALETTE and t["name"] in pipeline})

    def task(self, run_id: str, name: str) -> dict | None:
        return self._read("task", run_id, name)

    # -- logs -----------------------------------------------------------------

    def read_log(self, target: str, lines: int) -> str:
        """The log's last *lines* through the deploy tool's reader (:func:`deploy.logs.read`), every
        secret of the site masked. Where *target* is is looked up once a minute, not every refresh."""
        from deploy import DeployError, logs

        site, found = self._log_target(target)
        try:
            text = logs.read(site, found, lines)
        except DeployError as error:
            raise ToppipeError(str(error)) from None
        return masked(text, site_secrets(site.state_dir))

    def _log_target(self, target: str):
        now = time.monotonic()
        cached = self._targets.get(target)
        if cached is None or now - cached[0] > TARGET_KEPT_S:
            cached = self._targets[target] = (now, *self.control().log_target(target))
        return cached[1], cached[2]

    def worker_host(self, host: str) -> str:
        site = self.control().site()
        return inventory_host(host, [(h.name, h.address, h.is_local) for h in site.group("workers")], local_names())

    # -- actions --------------------------------------------------------------

    def start_service(self, host: str, name: str) -> str:
        return self.control().service("start", host, name)

    def stop_service(self, host: str, name: str) -> str:
        return self.control().service("stop", host, name)

    def restart_service(self, host: str, name: str) -> str:
        return self.control().service("restart", host, name)

    def scale(self, n: int, on: str) -> str:
        self.session().scale(int(n), on=on)
        return f"scaling to {n} workers on {on}"

    def cancel_run(self, run_id: str) -> str:
        from distributed import Future

        tasks = self.plain_tasks(run_id)
        session = self.session()
        keys = [t["dask_key"] for t in tasks if t.get("dask_key")]
        session.client.cancel([Future(k, session.client) for k in keys], force=True)
        session.client.log_event("toppipe-run", {"run": run_id, "state": "cancelled", "time": time.time()})
        return f"run {run_id} cancelled"
