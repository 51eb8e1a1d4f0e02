"""One background thread per app reads the site's status; every page reads its cache."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from toppipe.dashboard.formats import one_line
from toppipe.dashboard.source import SiteSource

log = logging.getLogger(__name__)

MAX_BACKOFF = 60.0


def next_delay(delay: float, interval: float, failed: bool, cap: float = MAX_BACKOFF) -> float:
    """The wait before the next call: *interval* after a success, doubled (up to *cap*) after a failure."""
    return min(max(delay, interval) * 2, max(cap, interval)) if failed else interval


class Poller:
    """Calls ``source.site_view()`` at most every *interval* seconds, in one daemon thread.

    While the source raises, the wait doubles up to *max_backoff*; a success
    resets it. :meth:`latest` is thread-safe and never calls the source. The
    thread starts at the first :meth:`latest` (or :meth:`start`), so an app
    that is only built, never served, polls nothing.
    """

    def __init__(self, source: SiteSource, interval: float = 3.0, max_backoff: float = MAX_BACKOFF,
                 clock: Callable[[], float] = time.time):  # fmt: skip
        self.source, self.interval, self.max_backoff, self.clock = source, interval, max_backoff, clock
        self.delay = interval
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._first = threading.Event()
        self._thread: threading.Thread | None = None
        self._data: dict | None = None
        self._fetched_at: float | None = None
        self._error: str | None = None

    def start(self) -> None:
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._loop, name="toppipe-dashboard-poller", daemon=True)
                self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def latest(self, wait: float = 0.0) -> tuple[dict | None, float | None, str | None]:
        """``(data, fetched_at, error)``: the last good view, when it was read (clock time), and
        the error of the last attempt if it failed. Waits up to *wait* s for the very first attempt."""
        self.start()
        if wait:
            self._first.wait(wait)
        with self._lock:
            return self._data, self._fetched_at, self._error

    def poll_once(self) -> None:
        """One call of the source, its result or error kept, the next delay chosen."""
        try:
            data: Any = self.source.site_view()
        except Exception as error:  # noqa: BLE001 - any failure of the source is shown, not raised
            log.warning("site status failed: %s", one_line(error))
            with self._lock:
                self._error = one_line(error)
                self.delay = next_delay(self.delay, self.interval, True, self.max_backoff)
        else:
            with self._lock:
                self._data, self._fetched_at, self._error = data, self.clock(), None
                self.delay = next_delay(self.delay, self.interval, False, self.max_backoff)
        self._first.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            self._stop.wait(self.delay)
