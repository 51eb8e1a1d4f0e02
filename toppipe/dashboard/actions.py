"""Every dashboard action goes through :meth:`Actions.perform`: checked, run once, audited."""

from __future__ import annotations

import logging
import threading
from collections import deque
import time
from typing import Any, Callable

from toppipe.dashboard.formats import first_line, one_line
from toppipe.dashboard.source import ACTIONS, SiteSource
from toppipe.errors import ToppipeError

log = logging.getLogger(__name__)

SCALE_TARGETS = ("hosts", "slurm")
AUDIT_KEPT = 1000


class DashboardError(ToppipeError):
    """A dashboard request that cannot be carried out (bad arguments, unknown action, no token)."""


def checked(action: str, args: dict[str, Any]) -> dict[str, Any]:
    """*args* for *action* with their types fixed, or :class:`DashboardError` saying what is wrong."""
    if action not in ACTIONS:
        raise DashboardError(f"unknown action {action!r}; use one of {', '.join(ACTIONS)}")
    expected = ACTIONS[action]
    if set(args) != set(expected):
        raise DashboardError(f"{action} takes {', '.join(expected)}; got {', '.join(sorted(args)) or 'nothing'}")
    if action == "scale":
        n = args["n"]
        if isinstance(n, str) and n.strip().isdigit():
            n = int(n)
        elif isinstance(n, float) and n.is_integer():
            n = int(n)
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise DashboardError(f"scale: n must be a whole number >= 0, not {args['n']!r}")
        if args["on"] not in SCALE_TARGETS:
            raise DashboardError(f"scale: on must be hosts or slurm, not {args['on']!r}")
        return {"n": n, "on": args["on"]}
    for name in expected:
        if not isinstance(args[name], str) or not args[name]:
            raise DashboardError(f"{action}: {name} must be a non-empty string")
    return dict(args)


class Actions:
    """Runs actions on the source; each one is appended to :attr:`audit` (the last
    :data:`AUDIT_KEPT`) and passed to *on_action* (the integration journals it).

    The audit entry: ``{"action", "args", "ok", "result", "time", "seconds"}``,
    where ``result`` is the one-line message shown to the user.
    """

    def __init__(self, source: SiteSource, on_action: Callable[[dict], None] | None = None):
        self.source, self.on_action = source, on_action
        self.audit: deque[dict] = deque(maxlen=AUDIT_KEPT)
        self._lock = threading.Lock()

    def perform(self, action: str, **args: Any) -> str:
        """Call the source's *action* once; its message, or one line saying why it failed."""
        started = time.time()
        ok, recorded = False, dict(args)
        try:
            fixed = recorded = checked(action, args)
            message, ok = first_line(getattr(self.source, action)(**fixed)) or f"{action}: done", True
        except ToppipeError as error:
            message = f"{action} failed: {first_line(error) or type(error).__name__}"
        except Exception as error:  # noqa: BLE001 - shown as one line; the traceback goes to the log only
            log.exception("dashboard action %s failed", action)
            message = f"{action} failed: {one_line(error)}"
        entry = {"action": action, "args": recorded, "ok": ok, "result": message,
                 "time": started, "seconds": round(time.time() - started, 3)}  # fmt: skip
        with self._lock:
            self.audit.append(entry)
        if self.on_action is not None:
            try:
                self.on_action(entry)
            except Exception:  # noqa: BLE001 - a broken journal must not hide the action's outcome
                log.exception("on_action failed for %s", action)
        return message
