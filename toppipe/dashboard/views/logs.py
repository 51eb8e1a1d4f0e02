"""Logs: ``/logs/<host>/<service>`` and ``/logs/slurm-job/<id>`` show one log and follow it while
the page is open; ``/logs/task/<run>/<task>`` shows a failed task's worker log (its Slurm job's
output when it ran in one) around the failure.

Every read is a bounded tail through the source (the deploy tool's ``tail`` on the log's host,
as ``python -m deploy logs`` reads it). To follow, each refresh reads the last
:data:`TAIL_LINES` again and keeps what comes after the part the page already shows
(:func:`new_lines`): the page's position in the log is the lines it holds.
"""

from __future__ import annotations

import datetime
import re
from typing import Any
from urllib.parse import quote, unquote

from dash import dcc, html

from toppipe.dashboard.formats import duration, when
from toppipe.dashboard.widgets import section

#: Lines read by each refresh of a followed log.
TAIL_LINES = 200
#: Lines a followed page keeps (the oldest are dropped).
SHOWN_MAX = 2000
#: Lines read to find a failure in, and how far around it (seconds) lines are shown.
AROUND_LINES = 5000
AROUND_MARGIN_S = 30.0
#: A line counts as logged while the task ran from its start (the log's times are cut to the
#: millisecond) to this many seconds after its recorded end (dask logs the failure just after).
DURING_AFTER_S = 0.5
#: Lines shown when none of the log falls around the failure.
FALLBACK_LINES = 100
FOLLOW_MS = 2000
JOB_PREFIX = "slurm-job"
TASK_PREFIX = "task"

STYLE_LOG = {"background": "#0f172a", "color": "#e2e8f0", "padding": "0.6em", "maxHeight": "70vh", "overflow": "auto",
             "whiteSpace": "pre-wrap", "wordBreak": "break-all"}  # fmt: skip


# -- links ----------------------------------------------------------------------


def log_href(host: str, service: str) -> str:
    return f"/logs/{quote(host, safe='')}/{quote(service, safe='')}"


def job_href(job: str) -> str:
    return f"/logs/{JOB_PREFIX}/{quote(str(job), safe='')}"


def task_href(run_id: str, task: str) -> str:
    return f"/logs/{TASK_PREFIX}/{quote(run_id, safe='')}/{quote(task, safe='')}"


def parse(path: str) -> tuple[str, ...] | None:
    """``("log", target, title)`` or ``("task", run id, task)`` for a ``/logs/...`` path, else None."""
    parts = [unquote(p) for p in path.split("/")[2:]] if path.startswith("/logs/") else []
    if len(parts) == 3 and parts[0] == TASK_PREFIX and parts[1] and parts[2]:
        return "task", parts[1], parts[2]
    if len(parts) == 2 and parts[0] == JOB_PREFIX and parts[1]:
        return "log", parts[1], f"Slurm job {parts[1]}: its output"
    if len(parts) == 2 and all(parts):
        return "log", f"{parts[0]}/{parts[1]}", f"{parts[1]} on {parts[0]}: its log"
    return None


# -- a followed log ---------------------------------------------------------------


def layout(target: str, title: str) -> html.Div:
    """The page of one log; ``log-interval`` refreshes it (:func:`follow`)."""
    return html.Div(id="log-page", children=[
        dcc.Store(id="log-target", data=target),
        dcc.Store(id="log-lines", data=[]),
        dcc.Store(id="log-scrolled"),
        dcc.Interval(id="log-interval", interval=FOLLOW_MS),
        section(title, html.Div(id="log-status", className="status-line", children="reading..."),
                html.Pre(id="log-text", style=STYLE_LOG), section_id="log-section"),
    ])  # fmt: skip


#: In the browser: the log's box scrolled to its newest line whenever lines are added.
SCROLL_TO_END = """function (_text) {
    const box = document.getElementById("log-text");
    if (box) { box.scrollTop = box.scrollHeight; }
    return null;
}"""


def new_lines(previous: list[str], window: list[str]) -> tuple[list[str], bool]:
    """``(lines of *window* after what *previous* ends with, whether lines may be missing)``.

    *window* is the log's last lines now, *previous* the last ones read before: *window* begins
    with the longest end of *previous* that it begins with, the rest is new. When none of
    *previous* is there (the log was rotated, or more than a window was written) all of
    *window* is new, and lines may be missing."""
    for start in range(len(previous)):
        overlap = len(previous) - start
        if previous[start:] == window[:overlap]:
            return window[overlap:], False
    return window, bool(previous)


def follow(shown: list[str] | None, text: str, now: float) -> tuple[list[str], str, bool]:
    """``(lines to show, status line, changed)`` after a read of the log's last lines (*text*)."""
    shown = list(shown or [])
    added, gap = new_lines(shown[-TAIL_LINES:], text.splitlines())
    lines = (added if gap else shown + added)[-SHOWN_MAX:]
    status = f"{len(lines)} lines, read {when(now)}; following (the last {TAIL_LINES} lines read every {FOLLOW_MS // 1000} s)"
    if gap:
        status += " - the log was restarted or grew by more than that: earlier lines dropped"
    return lines, status, gap or bool(added)


# -- a failed task's log ------------------------------------------------------------

_STAMP = re.compile(r"^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(?:[.,](\d{1,6}))?")


def stamp(line: str) -> float | None:
    """The local time a log line begins with (``2026-12-01 15:52:07,123``, dask's format), or None."""
    found = _STAMP.match(line)
    if not found:
        return None
    try:
        moment = datetime.datetime.strptime(f"{found[1]} {found[2]}", "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    return moment.timestamp() + (int(found[3]) / 10 ** len(found[3]) if found[3] else 0.0)


def around(lines: list[str], started: float | None, ended: float | None,
           margin: float = AROUND_MARGIN_S) -> tuple[list[tuple[str, bool]], bool]:  # fmt: skip
    """``([(line, during the task)], found)``: the lines logged from *margin* s before the task
    started to *margin* s after it ended (a line without a time belongs to the line above it).
    When no line falls there, the last :data:`FALLBACK_LINES` and False."""
    start = started if started is not None else ended
    end = ended if ended is not None else started
    if start is None or end is None:
        return [(line, False) for line in lines[-FALLBACK_LINES:]], False
    picked, current = [], None
    for line in lines:
        current = stamp(line) or current
        if current is not None and start - margin <= current <= end + margin:
            picked.append((line, start - 0.001 <= current <= end + DURING_AFTER_S))
    if not picked:
        return [(line, False) for line in lines[-FALLBACK_LINES:]], False
    return picked, True


def task_log_target(task: dict, worker_host: str | None) -> str:
    """The log of the worker that ran *task*: its Slurm job's output, or its host's workers."""
    return str(task["slurm_job"]) if task.get("slurm_job") else f"{worker_host or task.get('host')}/workers"


def task_page(run_id: str, task: dict, target: str, text: str) -> list[Any]:
    """The failure, a link to the whole log (followed), and the lines around the failure."""
    picked, found = around(text.splitlines(), task.get("started"), task.get("ended"))
    key = task.get("dask_key") or "\0"
    where = task.get("host") or "?"
    if task.get("slurm_job"):
        whole = dcc.Link(f"Slurm job {task['slurm_job']}: its whole output", href=job_href(task["slurm_job"]), id="task-log-whole")
    else:
        whole = dcc.Link(f"{target}: the whole log", href=log_href(*target.split("/", 1)), id="task-log-whole")
    took = task["ended"] - task["started"] if task.get("ended") and task.get("started") else None
    note = (f"the worker's log from {AROUND_MARGIN_S:.0f} s before the task started to {AROUND_MARGIN_S:.0f} s after it ended"
            if found else f"no line of the log was written around the failure: its last {FALLBACK_LINES} lines")  # fmt: skip
    rows = [html.Span(line + "\n", className="log-hit" if during or key in line else None) for line, during in picked]
    what = f"Slurm job {target}" if task.get("slurm_job") else target
    return [
        html.H2(["task ", html.Span(task["name"], id="task-log-name"), " of run ",
                 dcc.Link(run_id, href=f"/runs/{quote(run_id, safe='')}", id="task-log-run")]),  # fmt: skip
        html.P(f"{task.get('state') or '-'} on {where}" + (f", Slurm job {task['slurm_job']}" if task.get("slurm_job") else "")
               + f", started {when(task.get('started'))}, took {duration(took)}", id="task-log-where"),  # fmt: skip
        html.P(task.get("error") or "", id="task-log-error", style={"color": "#dc2626"}),
        html.P(whole),
        section(f"{what}: around the failure", html.Div(note, id="task-log-note", className="status-line"),
                html.Pre(rows, id="task-log-text", style=STYLE_LOG), section_id="task-log-section"),
    ]  # fmt: skip


def task_layout(run_id: str, task: str) -> html.Div:
    """The skeleton of a failed task's log page; filled once by its callback."""
    return html.Div(id="task-log-page", children=[
        dcc.Store(id="task-log-ids", data={"run": run_id, "task": task}),
        html.Div(id="task-log-content", children="reading the log..."),
    ])  # fmt: skip
