"""Cancelling a run cancels all of it, on the scheduler: a scheduler plugin in the site agent.

A run's client cancels the run's own tasks and logs ``{"run", "state": "cancelled"}`` (topic
``toppipe-run``). A map's elements are not among those tasks: its group task submits them
from a worker, fire-and-forget, so that they outlive that worker (:mod:`toppipe.pipeline.fanout`),
and a client's cancel leaves them be. This plugin cancels every task of the run the scheduler
holds when the event arrives, and any the run's group submits afterwards (a group still busy
reading the cache when it was cancelled). A task belongs to a run when its key holds
``-<run id>-``: every key toppipe makes for a run does (``pipeline.keys.dask_key``,
``<key>-group``, ``<key>-e<index>``), and run ids are unique.

A task already computing ends as dask's cancelled tasks do: its thread finishes, its result is
dropped (an element still writes its cache entry, a result of the saved code like any other).
"""

from __future__ import annotations

import asyncio
import time

from distributed.diagnostics.plugin import SchedulerPlugin

#: How long a cancelled run's later submissions are refused: longer than any group reads its cache.
KEEP_SECONDS = 3600.0


def belongs(key: object, run: str) -> bool:
    """Whether the dask *key* is one toppipe made for *run*."""
    return isinstance(key, str) and f"-{run}-" in key


class RunCanceller(SchedulerPlugin):
    """Cancels what a cancelled run has on the scheduler, now and later (see the module doc)."""

    name = "toppipe-run-canceller"

    def __init__(self, scheduler) -> None:
        self.scheduler = scheduler
        self.cancelled: dict[str, float] = {}  # run id -> monotonic time it was cancelled

    def log_event(self, topic: str, msg) -> None:  # noqa: D102 - called by the scheduler for every event
        if topic != "toppipe-run" or not isinstance(msg, dict) or msg.get("state") != "cancelled":
            return
        run = msg.get("run")
        if not isinstance(run, str) or not run:
            return
        now = time.monotonic()
        self.cancelled = {r: t for r, t in self.cancelled.items() if now - t < KEEP_SECONDS} | {run: now}
        self._cancel_soon([key for key in self.scheduler.tasks if belongs(key, run)], run)

    def update_graph(self, scheduler, *, keys, **kwargs) -> None:  # noqa: D102 - called for every submission
        for run in self.cancelled:
            late = [key for key in keys if belongs(key, run)]
            if late:
                self._cancel_soon(late, run)

    def _cancel_soon(self, keys: list, run: str) -> None:
        """Cancel *keys* once the scheduler has finished what it is doing (a submission's transitions)."""
        if keys:
            asyncio.get_running_loop().call_soon(self._cancel, keys, run)

    def _cancel(self, keys: list, run: str) -> None:
        scheduler = self.scheduler
        wanted = [key for key in keys if key in scheduler.tasks and scheduler.tasks[key].who_wants]
        if wanted:
            scheduler.stimulus_cancel(wanted, "fire-and-forget", force=True, reason="run-cancelled", msg=f"run {run} was cancelled")
