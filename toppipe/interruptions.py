"""When a session loses its site's scheduler: how to tell, and what to say.

dask reports a lost scheduler in several ways: futures cancelled with the
reason ``scheduler-connection-lost``, ``CommClosedError`` (an ``OSError``) or
a timeout on the comm, ``RuntimeError: ConnectionPool is closed``, or, once
the client gave up reconnecting, a client without a scheduler. Sessions turn
all of them into one :class:`~toppipe.errors.SchedulerLostError` (for a run:
:class:`~toppipe.errors.RunInterruptedError`) whose message says how to go on,
and silence dask's own log lines that only repeat it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from concurrent.futures import CancelledError

from toppipe.errors import RunInterruptedError, SchedulerLostError, TunnelClosedError

#: dask's reason for futures cancelled because the client lost the scheduler.
LOST_REASON = "scheduler-connection-lost"
#: What a lost scheduler raises from a client call (checked against the client's state).
LOST_ERRORS = (CancelledError, OSError, TimeoutError, RuntimeError, AttributeError)
#: The starts of dask's log lines that only say the scheduler is gone (toppipe raises instead).
LOST_LOG_LINES = (
    "Failed to reconnect to scheduler",
    "Lost connection to scheduler",
    "Client report stream closed",
    "Reconnecting",
    "Connection to scheduler broken",
)


def cancelled_by_loss(future) -> bool:
    """True when dask cancelled *future* because its client lost the scheduler (dask keeps the
    reason only on the future's state)."""
    state = getattr(future, "_state", None)  # distributed.client.FutureState; no public accessor
    return future.status == "cancelled" and getattr(getattr(state, "exception", None), "reason", None) == LOST_REASON


def scheduler_lost(error: BaseException, client, futures=()) -> bool:
    """True when *error*, raised by a call of *client*, means its scheduler is gone."""
    if not isinstance(error, LOST_ERRORS):
        return False
    if client.status != "running" or any(cancelled_by_loss(f) for f in futures):
        return True
    from distributed.client import FutureCancelledError, FuturesCancelledError

    if isinstance(error, FutureCancelledError):
        return error.reason == LOST_REASON
    return isinstance(error, FuturesCancelledError) and any(g.reason == LOST_REASON for g in error.error_groups)


def closed_before_tls(error: BaseException) -> bool:
    """True for tornado's error when a connection closes before its TLS handshake starts: what
    a tunnel's local end does while nothing listens at the far end (dask retries only OSError)."""
    return isinstance(error, ValueError) and "cannot convert to SSL" in str(error)


def _inventory(record: dict) -> str:
    """The site's inventory as the user would type it (relative to here when it is below)."""
    path = record.get("inventory") or f"inventories/{record['site']}"
    relative = os.path.relpath(path) if os.path.isabs(path) else path
    return relative if not relative.startswith("..") else path


def tunnel_closed(record: dict, settle: float = 0.2) -> bool:
    """True when *record* names a tunnelled site whose tunnel's local end of the scheduler does
    not listen (the tunnel's ssh died or lost its connection): the site itself may be fine.

    A local end that answers is asked once more after *settle* seconds: a killed ssh closes the
    connections it carried a moment before its listening socket, and a session asks right then."""
    if record.get("reach") != "tunnel":
        return False
    host, _, port = record["scheduler"].split("://", 1)[-1].rpartition(":")
    for attempt in range(2):
        if attempt:
            time.sleep(settle)
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1):
                pass
        except OSError:
            return True
    return False


def tunnel_error(record: dict, run_id: str | None = None) -> TunnelClosedError:
    """The error of a session call whose tunnel is closed; a run (*run_id*) goes on on the site."""
    where = record["scheduler"].split("://", 1)[-1]
    then = f"toppipe.connect({record['site']!r}).run({run_id!r}) to follow run {run_id}, which goes on on the site" if run_id else "session.reconnect()"
    return TunnelClosedError(
        f"the tunnel to site {record['site']} is closed (nothing listens at {where}); "
        f"run `python -m deploy up {_inventory(record)}`, then {then}"
    )


def scheduler_gone(record: dict) -> SchedulerLostError:
    """The error of a session call whose scheduler (or, on a tunnelled site, the tunnel) is gone."""
    if tunnel_closed(record):
        return tunnel_error(record)
    return SchedulerLostError(
        f"the scheduler of site {record['site']} is gone; run `python -m deploy up {_inventory(record)}`, "
        f"then session.reconnect() (or toppipe.connect({record['site']!r}))"
    )


def run_interrupted(record: dict, run_id: str, recorded: bool = False) -> SchedulerLostError:
    """The error of a run whose scheduler is gone (or, *recorded*, that the records show
    interrupted by an earlier loss), with the way to resume it."""
    resume = f"toppipe.connect({record['site']!r}).run({run_id!r}).resume()"
    if not recorded and tunnel_closed(record):
        return tunnel_error(record, run_id)
    if recorded:
        return RunInterruptedError(f"run {run_id} was interrupted: the scheduler of site {record['site']} "
                                   f"stopped during it; resume it with {resume}")  # fmt: skip
    return RunInterruptedError(
        f"run {run_id} was interrupted: the scheduler of site {record['site']} is gone; run "
        f"`python -m deploy up {_inventory(record)}`, then {resume}"
    )


class QuietLostConnection(logging.Filter):
    """Drops dask's log lines that only say the scheduler is gone: the session raises that, once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(LOST_LOG_LINES)


_QUIET = QuietLostConnection()


def quiet_dask_loss_logs() -> None:
    """Install the filter on dask's client loggers (once; idempotent)."""
    for name in ("distributed.client", "distributed.core", "distributed.batched"):
        logger = logging.getLogger(name)
        if _QUIET not in logger.filters:
            logger.addFilter(_QUIET)
