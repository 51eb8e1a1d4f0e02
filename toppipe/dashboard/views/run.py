"""``/runs/<id>``: one run: state, progress, task graph, timeline, failures with their remote
traceback, every task (cached ones marked), provenance, and Cancel. Refreshed until it settles."""

from __future__ import annotations

import base64
import json
from typing import Any

from dash import dcc, html

from toppipe.dashboard.formats import duration, when
from toppipe.dashboard.source import SiteSource
from toppipe.dashboard.views.timeline import figure
from toppipe.dashboard.widgets import confirm, section, state_badge, table
from toppipe.pipeline.progress import ORDER, counts
from toppipe.pipeline.render import PALETTE, svg

RUN_SETTLED = {"done", "failed", "cancelled", "interrupted"}
REFRESH_SECONDS = 2
#: Above these many tasks the graph is not drawn, the task table shows the most telling rows
#: (failed, running, then in order) and the page refreshes every :data:`SLOW_REFRESH_SECONDS`.
GRAPH_MAX_TASKS = 300
TABLE_MAX_ROWS = 500
FAILURES_SHOWN = 50
SLOW_REFRESH_SECONDS = 10


def layout(run_id: str) -> html.Div:
    return html.Div(id="run-page", children=[
        dcc.Store(id="run-id", data=run_id),
        dcc.Interval(id="run-interval", interval=REFRESH_SECONDS * 1000),
        html.Button("cancel run", id="run-cancel", n_clicks=0),
        confirm("run-cancel-confirm"),
        html.Div(id="run-content", children="loading..."),
    ])  # fmt: skip


def settled(run: dict | None) -> bool:
    return run is None or run.get("state") in RUN_SETTLED


def refresh_ms(n_tasks: int) -> int:
    return 1000 * (REFRESH_SECONDS if n_tasks <= TABLE_MAX_ROWS else SLOW_REFRESH_SECONDS)


def content(source: SiteSource, run_id: str, now: float) -> tuple[list[Any], bool, int]:
    """The page's sections, whether the run settled (then refreshing stops), and the refresh period in ms."""
    run = source.run(run_id)
    if run is None:
        # keep looking: a run started a moment ago reaches the records in the agent's next batch
        return [html.P(f"no run {run_id} (yet)", id="run-missing")], False, refresh_ms(0)
    tasks = source.tasks(run_id)
    states = {t["name"]: t["state"] for t in tasks}
    failed = [t for t in tasks if t["state"] == "failed"]
    return [
        header(run, now),
        progress_bar(states),
        section("Graph", graph(source, run_id, states), section_id="run-graph-section"),
        section("Timeline", dcc.Graph(id="run-timeline", figure=figure(tasks, now), config={"displaylogo": False}),
                section_id="run-timeline-section"),
        section(f"Failures ({len(failed)})", *[failure(t) for t in failed[:FAILURES_SHOWN]],
                html.P(f"{len(failed) - FAILURES_SHOWN} more failures: see the tasks table") if len(failed) > FAILURES_SHOWN else None,
                section_id="run-failures"),
        section("Tasks", tasks_table(tasks)),
        section("Provenance", provenance(run.get("provenance") or {})),
    ], settled(run), refresh_ms(len(tasks))  # fmt: skip


def header(run: dict, now: float) -> html.Div:
    took = (run.get("ended") or now) - run["started"] if run.get("started") else None
    return html.Div(id="run-header", children=[
        html.H2(["run ", html.Span(run["id"], id="run-id-text"), " of ", html.Span(run["pipeline"], id="run-pipeline")]),
        html.P(["state ", state_badge(run["state"], "run-state"), f"  started {when(run.get('started'))}",
                f", {'took' if run.get('ended') else 'running for'} {duration(took)}"]),
        html.P(run["error"], id="run-error", style={"color": "#dc2626"}) if run.get("error") else None,
    ])  # fmt: skip


def progress_bar(states: dict[str, str]) -> html.Div:
    """Segments per state (:func:`toppipe.pipeline.progress.counts`), and ``7/10 settled``."""
    n, total = counts(states), max(len(states), 1)
    finished = n["done"] + n["cached"] + n["failed"] + n["cancelled"]
    segments = [html.Div(title=f"{s} {n[s]}", className=f"progress-{s}",
                         style={"width": f"{100 * n[s] / total:.1f}%", "background": PALETTE.get(s, PALETTE["pending"])[1]})
                for s in ORDER if n[s]]  # fmt: skip
    detail = ", ".join(f"{s} {n[s]}" for s in ORDER if n[s])
    return html.Div(id="run-progress", children=[
        html.Div(f"{finished}/{len(states)} tasks settled ({detail or 'no tasks'})", id="run-progress-text"),
        html.Div(segments, style={"display": "flex", "height": "12px", "border": "1px solid #94a3b8", "maxWidth": "40em"}),
    ])  # fmt: skip


def graph(source: SiteSource, run_id: str, states: dict[str, str]) -> html.Img | html.P:
    """The task graph coloured by state: drawn here when the source gives the pipeline, else its SVG."""
    if len(states) > GRAPH_MAX_TASKS:
        return html.P(f"graph not drawn: {len(states)} tasks (more than {GRAPH_MAX_TASKS})", id="run-graph")
    pipeline = source.graph(run_id)
    if pipeline is not None:
        image = svg(pipeline, {name: s for name, s in states.items() if name in pipeline and s in PALETTE})
    else:
        image = source.graph_svg(run_id)
    if not image:
        return html.P("no graph for this run", id="run-graph")
    data = base64.b64encode(image.encode()).decode()
    return html.Img(id="run-graph", src=f"data:image/svg+xml;base64,{data}", alt=f"task graph of run {run_id}",
                    style={"maxWidth": "100%"})  # fmt: skip


def failure(task: dict) -> html.Div:
    where = task.get("host") or "?"
    if task.get("slurm_job"):
        where += f", Slurm job {task['slurm_job']}"
    return html.Div(id=f"failure-{task['name']}", className="failure", children=[
        html.H3(f"{task['name']} on {where} (attempt {task.get('attempts') or 1})", style={"fontSize": "1em"}),
        html.P(task.get("error") or "failed", className="failure-error", style={"color": "#dc2626"}),
        html.Pre(task.get("traceback") or "(no traceback recorded)", id=f"traceback-{task['name']}",
                 style={"background": "#f8fafc", "padding": "0.5em", "overflowX": "auto"}),
    ])  # fmt: skip


def tasks_table(tasks: list[dict]) -> html.Div:
    """Every task, or for a large run the failed and running ones first, up to :data:`TABLE_MAX_ROWS`."""
    shown = tasks
    if len(tasks) > TABLE_MAX_ROWS:
        rank = {"failed": 0, "running": 1}
        shown = sorted(tasks, key=lambda t: rank.get(t["state"], 2))[:TABLE_MAX_ROWS]
    rows = []
    for t in shown:
        took = t["ended"] - t["started"] if t.get("ended") and t.get("started") else None
        cached = html.Span("cached", className="cached-mark") if t.get("cached") or t["state"] == "cached" else ""
        rows.append((f"task-{t['name']}", [
            t["name"], state_badge(t["state"]), cached, t.get("host") or "-", t.get("slurm_job") or "-",
            t.get("attempts") or 0, when(t.get("started")), duration(took), t.get("error") or "",
        ]))  # fmt: skip
    hidden = len(tasks) - len(shown)
    return html.Div([
        table("run-tasks", ("task", "state", "cached", "host", "slurm job", "attempts", "started", "took", "error"), rows),
        html.P(f"{hidden} more tasks not shown", id="run-tasks-hidden") if hidden else None,
    ])  # fmt: skip


def provenance(record: dict) -> html.Dl:
    items: list[Any] = []
    for key in sorted(record):
        value = record[key]
        shown = html.Pre(json.dumps(value, indent=2, sort_keys=True)) if isinstance(value, (dict, list)) else str(value)
        items += [html.Dt(key, style={"fontWeight": "bold"}), html.Dd(shown, id=f"provenance-{key}")]
    return html.Dl(items or [html.Dt("no provenance recorded")], id="run-provenance")
