"""An in-memory :class:`~toppipe.dashboard.source.SiteSource` for the dashboard's tests:
data set by the test, every read counted and every action recorded."""

from __future__ import annotations

import threading
import time

from toppipe.dashboard.source import SiteSource
from toppipe.errors import ToppipeError
from toppipe.pipeline import Pipeline, task

T0 = time.time() - 600  # the runs' tasks started ten minutes ago


@task
def chunks():
    return [1, 2]


@task
def clean(chunks):
    return chunks


@task
def aggregate(clean):
    return sum(clean)


@task(after="aggregate")
def report(clean):
    return len(clean)


def pipeline() -> Pipeline:
    """The pipeline of the fake runs' tasks (what a source's ``graph()`` may give)."""
    return Pipeline("climate", [chunks, clean, aggregate, report])


def site_view() -> dict:
    return {
        "hosts": ["login", "node1", "node2"],
        "services": [
            {"host": "login", "name": "scheduler", "healthy": True, "detail": "answering", "uptime_s": 3600.0,
             "where": "instance lab.scheduler"},
            {"host": "login", "name": "jupyter", "healthy": False, "detail": "stopped", "uptime_s": None, "where": "pid 42"},
            {"host": "node1", "name": "worker", "healthy": True, "detail": "answering", "uptime_s": 120.0, "where": "pid 7"},
        ],
        "workers": [
            {"name": "node1-0", "host": "node1", "slurm_job": None, "memory": 2 << 30, "cpu": 12.0, "threads": 2},
            {"name": "slurm-101", "host": "node2", "slurm_job": "101", "memory": 1 << 30, "cpu": 50.0, "threads": 1},
        ],
        "slurm_queue": [{"job_id": "101", "state": "RUNNING", "node": "node2", "elapsed": "0:05:00"}],
        "links": {"dask": "http://127.0.0.1:8787/status", "jupyter": "http://127.0.0.1:8888/lab"},
    }


def make_runs(n: int) -> list[dict]:
    """*n* runs, newest first: every 7th failed, the newest still running."""
    runs = []
    for i in range(n):
        state = "running" if i == 0 else "failed" if i % 7 == 0 else "done"
        runs.append({"id": f"r{n - i:05d}", "pipeline": "weather" if i % 2 else "climate", "state": state,
                     "started": T0 - 60 * i, "ended": None if state == "running" else T0 - 60 * i + 30,
                     "tasks_total": 3, "error": "task clean failed" if state == "failed" else None,
                     "provenance": {"commit": "abc123", "images": {"worker": "sha256:0f"}}})  # fmt: skip
    return runs


def make_tasks(run_id: str) -> list[dict]:
    base = {"slurm_job": None, "attempts": 1, "cached": 0, "error": None, "traceback": None}
    return [
        {**base, "name": "chunks", "state": "cached", "host": None, "started": None, "ended": T0 + 1, "cached": 1, "attempts": 0},
        {**base, "name": "clean", "state": "failed", "host": "node2", "slurm_job": "101", "started": T0 + 1, "ended": T0 + 4,
         "error": "ValueError: bad row 17",
         "traceback": 'Traceback (most recent call last):\n  File "clean.py", line 3\nValueError: bad row 17'},
        {**base, "name": "aggregate", "state": "running", "host": "node1", "started": T0 + 2, "ended": None},
        {**base, "name": "report", "state": "pending", "host": None, "started": None, "ended": None, "attempts": 0},
    ]  # fmt: skip


class FakeSource(SiteSource):
    """Holds a site view, runs and tasks; counts reads; records actions in :attr:`actions`."""

    def __init__(self, runs: list[dict] | None = None, view: dict | None = None):
        self.view = view if view is not None else site_view()
        self.all_runs = runs if runs is not None else make_runs(3)
        self.task_rows = {r["id"]: make_tasks(r["id"]) for r in self.all_runs[:5]}
        self.svg = "<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'><title>fake graph</title></svg>"
        self.pipeline: Pipeline | None = None  # set it and graph() gives it (the dashboard then draws it)
        self.fail_with: Exception | None = None  # raised by site_view and every action while set
        self.site_view_calls = 0
        self.run_queries: list[tuple] = []  # (limit, offset, pipeline, state) of every runs() call
        self.count_queries = 0
        self.actions: list[tuple[str, dict]] = []
        self.logs: dict[str, list[str]] = {}  # log target -> its lines (read_log gives the last ones)
        self.log_reads: list[tuple[str, int]] = []  # (target, lines) of every read_log() call
        self._lock = threading.Lock()

    def site_view(self) -> dict:
        with self._lock:
            self.site_view_calls += 1
        if self.fail_with is not None:
            raise self.fail_with
        return self.view

    def _matching(self, pipeline, state) -> list[dict]:
        return [r for r in self.all_runs if (pipeline is None or r["pipeline"] == pipeline) and (state is None or r["state"] == state)]

    def runs(self, limit, offset, pipeline=None, state=None):
        self.run_queries.append((limit, offset, pipeline, state))
        return self._matching(pipeline, state)[offset : offset + limit]

    def count_runs(self, pipeline=None, state=None):
        self.count_queries += 1
        return len(self._matching(pipeline, state))

    def run(self, run_id):
        return next((r for r in self.all_runs if r["id"] == run_id), None)

    def tasks(self, run_id):
        return self.task_rows.get(run_id, [])

    def graph_svg(self, run_id):
        return self.svg

    def graph(self, run_id):
        return self.pipeline

    def read_log(self, target, lines):
        self.log_reads.append((target, lines))
        if target not in self.logs:
            raise ToppipeError(f"no log named {target!r}")
        return "\n".join(self.logs[target][-lines:] if lines else [])

    def worker_host(self, host):
        return {"node2.cluster": "node2"}.get(host, host)

    def _act(self, action: str, message: str, **args) -> str:
        self.actions.append((action, args))
        if self.fail_with is not None:
            raise self.fail_with
        return message

    def start_service(self, host, name):
        return self._act("start_service", f"{name} on {host} started", host=host, name=name)

    def stop_service(self, host, name):
        return self._act("stop_service", f"{name} on {host} stopped", host=host, name=name)

    def restart_service(self, host, name):
        return self._act("restart_service", f"{name} on {host} restarted", host=host, name=name)

    def scale(self, n, on):
        return self._act("scale", f"scaling to {n} workers on {on}", n=n, on=on)

    def cancel_run(self, run_id):
        if self.run(run_id) is None:
            self.actions.append(("cancel_run", {"run_id": run_id}))
            raise ToppipeError(f"no run {run_id}")
        return self._act("cancel_run", f"run {run_id} cancelled", run_id=run_id)
