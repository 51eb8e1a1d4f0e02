"""What the dashboard reads and drives: one interface, so the app runs without a site.

The integration step implements :class:`SiteSource` over a session and the
record store; tests use an in-memory fake. Every method may raise (a
:class:`~toppipe.errors.ToppipeError` ideally): the dashboard shows one line.

Shapes (plain dicts, JSON-able):

``site_view()``::

    {"hosts": ["login", ...] or [{"name", "address", "reachable": bool}, ...],
     "services": [{"host", "name", "healthy": bool, "detail": str, "uptime_s": float | None, "where": str}],
     "workers": [{"name", "host", "slurm_job": str | None, "memory": int, "cpu": float, "threads": int}],
     "slurm_queue": [{"job_id", "state", "node", "elapsed"}],
     "links": {"dask": url, "jupyter": url}}

``runs()``/``run()``: rows of the records' ``runs`` table (id, pipeline, state,
started, ended, tasks_total, error, provenance: dict). ``tasks()``: rows of its
``tasks`` table (name, state, host, slurm_job, started, ended, attempts, cached,
error, traceback, inputs, elements), a map's elements as ``task[index]``. A run
of ten thousand elements is read through ``plain_tasks()``, ``summary()``,
``elements()`` and ``failures()``: their defaults below work from ``tasks()``;
the real site answers each with one query.

``read_log(target, lines)``: the last lines of a service's log (``host/service``) or of a
Slurm job's output (its id), as text.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from toppipe.errors import ToppipeError
from toppipe.pipeline import summary

if TYPE_CHECKING:
    from toppipe.pipeline.graph import Pipeline

#: Action name -> the arguments it takes (what :func:`toppipe.dashboard.actions.Actions.perform` accepts).
ACTIONS: dict[str, tuple[str, ...]] = {
    "start_service": ("host", "name"),
    "stop_service": ("host", "name"),
    "restart_service": ("host", "name"),
    "scale": ("n", "on"),
    "cancel_run": ("run_id",),
}


class SiteSource(ABC):
    """A site as the dashboard sees it: status, run records, and the actions it may take."""

    # -- reading ------------------------------------------------------------

    @abstractmethod
    def site_view(self) -> dict:
        """Hosts, services, workers, the Slurm queue and links (called by the poller only)."""

    @abstractmethod
    def runs(self, limit: int, offset: int, pipeline: str | None = None, state: str | None = None) -> list[dict]:
        """One page of runs, newest first."""

    @abstractmethod
    def count_runs(self, pipeline: str | None = None, state: str | None = None) -> int:
        """How many runs match (for the pager)."""

    @abstractmethod
    def run(self, run_id: str) -> dict | None:
        """One run's row, or None when there is no such run."""

    @abstractmethod
    def tasks(self, run_id: str) -> list[dict]:
        """The run's task rows."""

    def plain_tasks(self, run_id: str) -> list[dict]:
        """The run's task rows without its maps' elements."""
        return [t for t in self.tasks(run_id) if summary.split(t["name"])[1] is None]

    def summary(self, run_id: str) -> list[summary.TaskSummary]:
        """One row per task, a map's elements counted by state."""
        return summary.from_rows(self.tasks(run_id))

    def elements(self, run_id: str, task: str, state: str | None = None, limit: int = 50, offset: int = 0) -> list[dict]:
        """One page of *task*'s element rows in index order (those in *state* if given), each with its ``index``."""
        rows = [{**t, "index": summary.split(t["name"])[1]} for t in self.tasks(run_id)
                if summary.split(t["name"])[0] == task and summary.split(t["name"])[1] is not None
                and state in (None, t["state"])]  # fmt: skip
        return sorted(rows, key=lambda r: r["index"])[offset : offset + limit]

    def failures(self, run_id: str, limit: int) -> list[dict]:
        """Up to *limit* failed rows (tasks and elements), with their inputs and traceback."""
        return [t for t in self.tasks(run_id) if t["state"] == "failed"][:limit]

    @abstractmethod
    def graph_svg(self, run_id: str) -> str | None:
        """The run's task graph as SVG, coloured by state, or None when unknown."""

    def graph(self, run_id: str) -> Pipeline | None:
        """The run's pipeline, when the source can load it: the dashboard then draws it itself
        (:func:`toppipe.pipeline.render.svg`, coloured by the task rows) instead of :meth:`graph_svg`."""
        return None

    def task(self, run_id: str, name: str) -> dict | None:
        """One task or element row of the run, or None."""
        return next((t for t in self.tasks(run_id) if t["name"] == name), None)

    # -- logs -----------------------------------------------------------------

    def read_log(self, target: str, lines: int) -> str:
        """The last *lines* of the log *target* names (``host/service``, a Slurm job id), secrets
        masked; as ``python -m deploy logs`` reads it."""
        raise ToppipeError("this site's logs cannot be read from the dashboard")

    def worker_host(self, host: str) -> str:
        """The site's name for the host a task ran on (tasks record the machine's hostname)."""
        return host

    # -- actions: each returns a one-line message -----------------------------

    @abstractmethod
    def start_service(self, host: str, name: str) -> str: ...

    @abstractmethod
    def stop_service(self, host: str, name: str) -> str: ...

    @abstractmethod
    def restart_service(self, host: str, name: str) -> str: ...

    @abstractmethod
    def scale(self, n: int, on: str) -> str:
        """Run *n* workers ``on="hosts"`` or ``on="slurm"``."""

    @abstractmethod
    def cancel_run(self, run_id: str) -> str: ...
