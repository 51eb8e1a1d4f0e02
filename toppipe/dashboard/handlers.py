"""The bodies of the dashboard's callbacks, as plain methods (tests call them directly).

:class:`Dashboard` holds what every page shares: the source, the one poller,
and the actions. Nothing here raises into Dash: a failing read or action
becomes one line on the page.

Dash fires a callback whose input is inserted by the router (a page opened)
even with ``prevent_initial_call`` when its output was already there (the
shared ``action-message``): every ``ask_*``/``confirm_*`` method therefore acts
only on a real click (*clicks*/*submitted* set), never on a page being opened.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable
from urllib.parse import unquote

from dash import html, no_update

from toppipe.dashboard.actions import Actions, DashboardError, checked
from toppipe.dashboard.formats import one_line
from toppipe.dashboard.poller import Poller
from toppipe.dashboard.source import SiteSource
from toppipe.dashboard.views import graph as graph_view
from toppipe.dashboard.views import logs as logs_view
from toppipe.dashboard.views import run as run_view
from toppipe.dashboard.views import runs as runs_view
from toppipe.dashboard.views import site as site_view

log = logging.getLogger(__name__)
FIRST_STATUS_WAIT = 2.0  # seconds the very first page load waits for the poller's first read


def read_error(what: str, error: Exception) -> html.P:
    log.warning("dashboard: cannot read %s: %s", what, one_line(error))
    return html.P(f"cannot read {what}: {one_line(error)}", className="read-error", style={"color": "#dc2626"})


class Dashboard:
    """One app's state and callback bodies."""

    def __init__(self, source: SiteSource, poll_interval: float = 3.0, on_action: Callable[[dict], None] | None = None,
                 clock: Callable[[], float] = time.time):  # fmt: skip
        self.source, self.poll_interval, self.clock = source, poll_interval, clock
        self.poller = Poller(source, poll_interval, clock=clock)
        self.actions = Actions(source, on_action)

    def perform(self, action: str, **args: Any) -> str:
        """The one way an action is carried out (see :class:`toppipe.dashboard.actions.Actions`)."""
        return self.actions.perform(action, **args)

    # -- routing --------------------------------------------------------------

    def route(self, pathname: str | None) -> Any:
        """The skeleton of the page at *pathname*."""
        path = (pathname or "/").rstrip("/") or "/"
        if path == "/":
            return site_view.layout(self.poll_interval)
        if path == "/runs":
            return runs_view.layout()
        if path.startswith("/runs/") and path.count("/") == 2:
            return run_view.layout(unquote(path[len("/runs/") :]))
        if path.startswith("/logs/"):
            found = logs_view.parse(path)
            if found and found[0] == "task":
                return logs_view.task_layout(found[1], found[2])
            if found:
                return logs_view.layout(found[1], found[2])
        return html.Div([html.H2("not found"), html.P(f"no page {pathname}")], id="not-found")

    # -- the site -------------------------------------------------------------

    def site(self, rendered_at: float | None = None) -> tuple[Any, Any, float | None]:
        """``(status line, content or no_update, fetched_at)`` from the poller's cache only;
        the content is rebuilt only when the poller read something newer than *rendered_at*."""
        data, fetched_at, error = self.poller.latest(wait=FIRST_STATUS_WAIT)
        status = site_view.status_line(fetched_at, error, self.clock())
        if fetched_at is not None and fetched_at == rendered_at:
            return status, no_update, rendered_at
        return status, site_view.content(data), fetched_at

    def ask_service_action(self, button: dict | None, clicks: int | None) -> tuple[Any, str, bool]:
        """``(pending action, dialog message, show the dialog)`` for a click on a service button."""
        if not button or not clicks:
            return no_update, no_update, False
        action, host, name = button["action"], button["host"], button["name"]
        pending = {"action": f"{action}_service", "args": {"host": host, "name": name}}
        return pending, site_view.confirm_message(action, host, name), True

    def confirm_pending(self, pending: dict | None, submitted: int | None) -> Any:
        """The confirmed service action, performed; its one-line message."""
        if not submitted or not pending or not isinstance(pending.get("args"), dict):
            return no_update
        return self.perform(str(pending.get("action")), **pending["args"])

    def ask_scale(self, n: Any, on: Any, clicks: int | None) -> tuple[str, bool, Any]:
        """``(dialog message, show it, action message)``: bad input is said at once, with no dialog."""
        if not clicks:
            return no_update, False, no_update
        try:
            args = checked("scale", {"n": n, "on": on})
        except DashboardError as error:
            return no_update, False, f"scale: {error}".replace("scale: scale: ", "scale: ")
        return f"Scale to {args['n']} worker{'s' * (args['n'] != 1)} on {args['on']}?", True, no_update

    def confirm_scale(self, n: Any, on: Any, submitted: int | None) -> Any:
        return self.perform("scale", n=n, on=on) if submitted else no_update

    # -- logs -----------------------------------------------------------------

    def follow_log(self, target: str | None, shown: list[str] | None) -> tuple[Any, Any, Any]:
        """``(log text, status line, lines shown)`` after one more read of *target*'s last lines;
        the text is sent again only when lines were added."""
        if not target:
            return no_update, no_update, no_update
        try:
            text = self.source.read_log(target, logs_view.TAIL_LINES)
        except Exception as error:  # noqa: BLE001 - shown as one line; the next refresh tries again
            return no_update, read_error(f"the log of {target}", error), no_update
        lines, status, changed = logs_view.follow(shown, text, self.clock())
        if not changed:
            return no_update, status, no_update
        return "\n".join(lines), status, lines

    def task_log(self, ids: dict | None) -> Any:
        """A failed task's page: its worker's log (its Slurm job's output) around the failure."""
        if not ids:
            return no_update
        run_id, name = ids.get("run"), ids.get("task")
        try:
            task = self.source.task(run_id, name)
            if task is None:
                return html.P(f"no task {name} in run {run_id}", id="task-log-missing")
            host = None if task.get("slurm_job") else self.source.worker_host(task.get("host") or "")
            target = logs_view.task_log_target(task, host)
            text = self.source.read_log(target, logs_view.AROUND_LINES)
        except Exception as error:  # noqa: BLE001 - shown as one line
            return read_error(f"the log of task {name}", error)
        return logs_view.task_page(run_id, task, target, text)

    # -- runs -----------------------------------------------------------------

    def runs(self, index: int | None, pipeline: str | None, state: str | None, triggered: str | None = None) -> tuple:
        """``(content, "runs 1-50 of N", page index, newer disabled, older disabled)``."""
        index = runs_view.step(int(index or 0), triggered)
        try:
            content, info, index, total = runs_view.page(self.source, index, pipeline, state)
        except Exception as error:  # noqa: BLE001 - shown as one line
            return read_error("the runs", error), "", index, True, True
        return content, info, index, index == 0, (index + 1) * runs_view.PAGE_SIZE >= total

    def run(self, run_id: str | None, selected_task: str | None = None) -> tuple[Any, Any, bool, int, bool]:
        """``(content, graph, stop refreshing, refresh period in ms, cancel disabled)``; the graph is a
        :class:`~toppipe.dashboard.views.graph.Drawn` (or no_update), *selected_task* the task
        clicked in it."""
        if not run_id:
            return no_update, no_update, True, run_view.refresh_ms(0), True
        try:
            content, graph, settled, period = run_view.content(self.source, run_id, self.clock(), selected_task)
        except Exception as error:  # noqa: BLE001 - shown as one line; the next refresh tries again
            return read_error(f"run {run_id}", error), no_update, False, run_view.refresh_ms(0), False
        return content, graph, settled, period, settled

    def elements(self, run_id: str | None, task: str | None, state: str | None, index: int | None) -> tuple:
        """``(task options, table, info, previous disabled, next disabled)``: a page of a map's elements."""
        if not run_id:
            return no_update, no_update, "", True, True
        try:
            return run_view.elements_page(self.source, run_id, task, state, int(index or 0))
        except Exception as error:  # noqa: BLE001 - shown as one line; the next refresh tries again
            return no_update, read_error(f"the elements of run {run_id}", error), "", True, True

    @staticmethod
    def element_page_index(index: int | None, triggered: str | None) -> int:
        """The drill-down's page after a click on previous or next, or a new task or state. (Its own
        callback, apart from the refreshes: Dash drops the answer to a request when the same
        callback was asked again before it came, and a refresh must not swallow a click.)"""
        return run_view.element_step(int(index or 0), triggered)

    def drill(self, search: str | None) -> tuple[Any, Any]:
        """``(task, state)`` for the drill-down, from the query of a count's link in the tasks table."""
        asked = run_view.drilled(search)
        return asked if asked is not None else (no_update, no_update)

    def run_page(self, run_id: str | None, clicked: dict | None = None) -> tuple:
        """:meth:`run` as the page's refresh sets it: ``(above the drill-down, below it, the graph's
        elements, note, selected line and style, stop refreshing, period, cancel disabled)``;
        *clicked* is the data of the graph's node clicked last."""
        content, graph, *rest = self.run(run_id, (clicked or {}).get("id"))
        return (*run_view.split(content), *(graph if graph is not no_update else [no_update] * 4), *rest)

    @staticmethod
    def select_task(node: dict | None) -> Any:
        """The line under the graph for a click on a node (nothing when there is no node)."""
        return graph_view.selected(node) if node and node.get("id") else no_update

    def ask_cancel(self, run_id: str | None, clicks: int | None) -> tuple[str, bool]:
        if not run_id or not clicks:
            return no_update, False
        return f"Cancel run {run_id}? Its unfinished tasks stop.", True

    def confirm_cancel(self, run_id: str | None, submitted: int | None) -> Any:
        return self.perform("cancel_run", run_id=run_id) if run_id and submitted else no_update
