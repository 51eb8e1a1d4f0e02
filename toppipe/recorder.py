"""The run recorder: a scheduler plugin in the site agent that writes every run
and task event into the site's record store, so records outlive the notebook.

Clients and workers speak to it through dask's event log (``log_event``):

* topic ``toppipe-run``: ``{"run", "state": "started", "pipeline", "tasks",
  "keys", "provenance", "time"}`` from the client, then ``{"run", "state":
  "done" | "failed" | "cancelled", "time"}``;
* topic ``toppipe-task``: ``{"run", "task", "state": "running" | "done" |
  "cached" | "failed", "host", "slurm_job", "time", "error", "traceback",
  "inputs"}`` (``inputs``: a failed task's inputs, shortened)
  from the worker running the task (a task that runs again after its worker
  died says ``running`` twice: the record counts attempts).

The scheduler's event loop only queues; one thread writes, in batches, and
keeps each run's task states in memory so that it can tell a run is over.

When the store is away, no event is lost: the writer keeps them in a spool
on disk (:mod:`toppipe.spool`, bounded), retries with a growing pause, and
writes the spool in order once the store answers, before anything newer.
When the agent starts, its first event (topic ``toppipe-agent``) has the
store record every run still ``running`` as ``interrupted``: no run of an
earlier agent can still be going on.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path

from distributed.diagnostics.plugin import SchedulerPlugin

from toppipe.records import AGENT_TOPIC
from toppipe.spool import DEFAULT_MAX_BYTES, Spool

TOPICS = ("toppipe-run", "toppipe-task")
FINAL = {"done", "cached", "failed"}
BATCH_SECONDS = 0.2
#: Pauses between attempts to reach a store that is away: the first, and the longest.
RETRY_SECONDS = (0.5, 10.0)
#: Events per transaction when the spool is written to the store.
DRAIN_BATCH = 500

log = logging.getLogger("toppipe.recorder")


class RunRecorder(SchedulerPlugin):
    """Queues toppipe's events; a writer thread stores them (see the module doc)."""

    name = "toppipe-run-recorder"

    def __init__(self, url: str, spool: str | Path, spool_bytes: int = DEFAULT_MAX_BYTES):
        self.url = url
        self.spool = Spool(spool, spool_bytes)
        self.events: queue.Queue = queue.Queue()
        self.events.put((AGENT_TOPIC, {"state": "started", "time": time.time()}))  # runs of earlier agents: interrupted
        self.live: dict[str, dict[str, str]] = {}  # run -> task -> last state
        self.open: dict[str, int] = {}  # run -> tasks not settled yet
        self.failed: dict[str, int] = {}  # run -> tasks failed
        self._store = None
        self._pause, self._retry_at, self._away_since = RETRY_SECONDS[0], 0.0, None
        self._dropped = 0
        self._writer = threading.Thread(target=self._write_forever, name="toppipe-records", daemon=True)
        self._writer.start()

    def log_event(self, topic: str, msg) -> None:  # noqa: D102 - called by the scheduler for every event
        if topic in TOPICS and well_formed(topic, msg):
            self.events.put((topic, msg))

    def interrupt_runs(self, why: str) -> None:
        """Have the store record every run still ``running`` as ``interrupted``, because *why* (this agent stops)."""
        self.events.put((AGENT_TOPIC, {"state": "stopping", "time": time.time(), "why": why}))

    def close(self, timeout: float = 10) -> None:
        """Write (or spool) what is queued, then stop the writer."""
        self.events.put(None)
        self._writer.join(timeout)

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
        """Write each batch, or spool it while the store is away or a backlog waits (order kept)."""
        while True:
            waiting = None if self.spool.empty else max(0.0, self._retry_at - time.monotonic())
            events, closing = self._collect(waiting)
            if events and not (self.spool.empty and self._attempt(lambda store: store.write(events))):
                self._keep(events)
            if not self.spool.empty and (closing or time.monotonic() >= self._retry_at):
                self._attempt(self._drain)
            if closing:
                if self._store is not None:
                    self._store.close()
                return

    def _collect(self, timeout: float | None) -> tuple[list[tuple[str, dict]], bool]:
        """The events of one batch (waiting up to *timeout* for the first; None: for ever), with the
        run ends they complete; and whether the recorder is closing."""
        try:
            batch = [self.events.get(timeout=timeout)]
        except queue.Empty:
            return [], False
        deadline = time.monotonic() + BATCH_SECONDS
        while batch[-1] is not None and time.monotonic() < deadline:
            try:
                batch.append(self.events.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        events = []
        for topic, msg in filter(None, batch):
            events += [(topic, msg), *self._follow(topic, msg)]
        return events, batch[-1] is None

    def _attempt(self, write) -> bool:
        """Run *write(store)*; on failure note the store away and when to try again."""
        from toppipe.records import RecordStore

        try:
            self._store = self._store or RecordStore(self.url)
            write(self._store)
        except Exception as error:  # the store is away (or refused): keep the events, try again later
            if self._store is not None:
                try:
                    self._store.close()
                except Exception:  # noqa: BLE001 - its connection is already broken
                    pass
            self._store = None
            if self._away_since is None:
                self._away_since = time.monotonic()
                log.warning("record store %s is away (%s); keeping run records in %s and retrying",
                            self.url.split("?")[0], str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__,
                            self.spool.path)  # fmt: skip
            self._retry_at = time.monotonic() + self._pause
            self._pause = min(self._pause * 2, RETRY_SECONDS[1])
            return False
        if self._away_since is not None:
            log.warning("record store %s is back after %.0f s; the spooled run records are written",
                        self.url.split("?")[0], time.monotonic() - self._away_since)  # fmt: skip
        self._pause, self._away_since = RETRY_SECONDS[0], None
        return True

    def _drain(self, store) -> None:
        """Write the spool to *store* in order, a transaction per chunk, noting each as done."""
        while not self.spool.empty:
            before = self.spool.read(0)[1]
            events, offset = self.spool.read(DRAIN_BATCH)
            if events:
                store.write(events)
            if offset == before:  # nothing whole left to read
                break
            self.spool.acknowledge(offset)
        self._dropped = 0

    def _keep(self, events: list[tuple[str, dict]]) -> None:
        try:
            dropped = self.spool.append(events)
        except OSError as error:  # the agent's disk: the writer must live on and say what it lost
            log.error("run-record spool %s cannot be written (%s): %d events lost", self.spool.path, error, len(events))
            return
        if dropped:
            if not self._dropped:
                log.error("run-record spool %s is full (%d bytes, the agent's records_spool_bytes): dropping events "
                          "until the record store is back", self.spool.path, self.spool.max_bytes)  # fmt: skip
            self._dropped += dropped


def well_formed(topic: str, msg) -> bool:
    """True for a message the store can apply (a malformed one would block every event after it)."""
    if not isinstance(msg, dict) or not isinstance(msg.get("run"), str) or not isinstance(msg.get("state"), str):
        return False
    if not isinstance(msg.get("time"), (int, float)):
        return False
    if topic == "toppipe-task":
        return isinstance(msg.get("task"), str)
    return msg["state"] != "started" or (isinstance(msg.get("pipeline"), str) and isinstance(msg.get("tasks"), (list, tuple)))
