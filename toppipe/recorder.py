"""The run recorder: a scheduler plugin in the site agent that writes every run
and task event into the site's record store, so records outlive the notebook.

Clients and workers speak to it through dask's event log (``log_event``):

* topic ``toppipe-run``: ``{"run", "state": "started", "pipeline", "tasks",
  "keys", "provenance", "time"}`` from the client, then ``{"run", "state":
  "done" | "failed" | "cancelled", "time"}``;
* topic ``toppipe-task``: ``{"run", "task", "state": "running" | "done" |
  "cached" | "failed", "host", "slurm_job", "time", "error", "traceback"}``
  from the worker running the task (a task that runs again after its worker
  died says ``running`` twice: the record counts attempts).

The scheduler's event loop only queues; one thread writes, in batches, and
keeps each run's task states in memory so that it can tell a run is over.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from distributed.diagnostics.plugin import SchedulerPlugin

TOPICS = ("toppipe-run", "toppipe-task")
FINAL = {"done", "cached", "failed"}
BATCH_SECONDS = 0.2

log = logging.getLogger("toppipe.recorder")


class RunRecorder(SchedulerPlugin):
    """Queues toppipe's events; a writer thread stores them (see the module doc)."""

    name = "toppipe-run-recorder"

    def __init__(self, url: str):
        self.url = url
        self.events: queue.Queue = queue.Queue()
        self.live: dict[str, dict[str, str]] = {}  # run -> task -> last state
        self.open: dict[str, int] = {}  # run -> tasks not settled yet
        self.failed: dict[str, int] = {}  # run -> tasks failed
        self._writer = threading.Thread(target=self._write_forever, name="toppipe-records", daemon=True)
        self._writer.start()

    def log_event(self, topic: str, msg) -> None:  # noqa: D102 - called by the scheduler for every event
        if topic in TOPICS and isinstance(msg, dict):
            self.events.put((topic, msg))

    def status(self, run: str) -> dict[str, str] | None:
        """The task states of a run this agent has seen (None: not seen since it started)."""
        states = self.live.get(run)
        return dict(states) if states is not None else None

    def _follow(self, topic: str, msg: dict) -> list[tuple[str, dict]]:
        """Track states; when a run's last task settles, add the run's end (counted, not scanned:
        a run of ten thousand tasks must not cost ten thousand checks per event)."""
        run = msg.get("run")
        if topic == "toppipe-run":
            if msg.get("state") == "started":
                self.live[run] = {name: "pending" for name in msg.get("tasks", ())}
                self.open[run] = len(self.live[run])
                self.failed[run] = 0
            elif run in self.live:
                self.live[run]["__run__"] = msg["state"]
            return []
        states = self.live.get(run)
        if states is None or "__run__" in states or msg.get("task") not in states:
            return []
        before, after = states[msg["task"]], msg["state"]
        states[msg["task"]] = after
        self.open[run] += (before in FINAL) - (after in FINAL)
        self.failed[run] += (after == "failed") - (before == "failed")
        if self.open[run] == 0:
            state = "failed" if self.failed[run] else "done"
            states["__run__"] = state
            return [("toppipe-run", {"run": run, "state": state, "time": time.time()})]
        return []

    def _write_forever(self) -> None:
        from toppipe.records import RecordStore

        store, unwritten = None, []
        while True:
            batch = [self.events.get()]
            deadline = time.monotonic() + BATCH_SECONDS
            while time.monotonic() < deadline:
                try:
                    batch.append(self.events.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            events = unwritten
            for topic, msg in batch:
                events += [(topic, msg), *self._follow(topic, msg)]
            try:
                store = store or RecordStore(self.url)
                store.write(events)
                unwritten = []
            except Exception:  # the store is away: keep the agent alive and the events, retry with the next batch
                log.exception("could not write %d run records to %s; will retry", len(events), self.url.split("?")[0])
                if store is not None:
                    store.close()
                store, unwritten = None, events
                self.events.put(("toppipe-retry", {}))  # wake up again soon
                time.sleep(1)
