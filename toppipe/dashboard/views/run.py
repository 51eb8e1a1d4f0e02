"""``/runs/<id>``: one run: state, progress, task graph, timeline, failures with their inputs,
remote traceback and a link to their worker's log around the failure, every task (cached ones
marked) with a map's elements counted by state, provenance, and Cancel; refreshed until it
settles. A map's elements are drilled into a page at a time (the Elements section, a callback
of its own): a run of ten thousand elements is read with a few queries per refresh, its graph
and timeline show its tasks, never its elements."""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlencode

from dash import dcc, html, no_update

from toppipe.dashboard.formats import duration, when
from toppipe.dashboard.source import SiteSource
from toppipe.dashboard.views import graph as graph_view
from toppipe.dashboard.views.logs import task_href
from toppipe.dashboard.views.runs import step as runs_step
from toppipe.dashboard.views.timeline import figure
from toppipe.dashboard.widgets import confirm, section, state_badge, table
from toppipe.pipeline.progress import ORDER, counts
from toppipe.pipeline.render import PALETTE
from toppipe.pipeline.summary import STATES, TaskSummary

if TYPE_CHECKING:
    from toppipe.pipeline.graph import Pipeline

RUN_SETTLED = {"done", "failed", "cancelled", "interrupted"}
REFRESH_SECONDS = 2
#: Above these many tasks the graph is not drawn, the task table shows the most telling rows
#: (failed, running, then in order) and the page refreshes every :data:`SLOW_REFRESH_SECONDS`.
GRAPH_MAX_TASKS = 300
TABLE_MAX_ROWS = 500
FAILURES_SHOWN = 50
SLOW_REFRESH_SECONDS = 10
#: Elements in one page of the drill-down.
ELEMENTS_PAGE = 50


def layout(run_id: str) -> html.Div:
    return html.Div(id="run-page", children=[
        dcc.Store(id="run-id", data=run_id),
        dcc.Interval(id="run-interval", interval=REFRESH_SECONDS * 1000),
        html.Button("cancel run", id="run-cancel", n_clicks=0),
        confirm("run-cancel-confirm"),
        html.Div(id="run-content", children="loading..."),
        elements_section(),
        section("Graph", graph_view.canvas(), section_id="run-graph-section"),
        html.Div(id="run-details"),
    ])  # fmt: skip


#: How many of :func:`content`'s sections go above the drill-down (header, progress, tasks).
ABOVE_ELEMENTS = 3


def split(sections: Any) -> tuple[Any, Any]:
    """:func:`content`'s sections above the drill-down (``run-content``) and below it (``run-details``)."""
    if isinstance(sections, list):
        return sections[:ABOVE_ELEMENTS], sections[ABOVE_ELEMENTS:]
    return sections, [] if sections is not no_update else no_update


def elements_section() -> html.Section:
    """The drill-down: a mapped task, a state, a page of its elements (filled by :func:`elements_page`)."""
    small = {"width": "14em", "display": "inline-block", "verticalAlign": "middle", "marginRight": "1em"}
    return section("Elements", html.Div(id="run-elements-controls", children=[
        dcc.Dropdown(id="run-elements-task", placeholder="mapped task", clearable=False, style=small),
        dcc.Dropdown(id="run-elements-state", options=list(STATES), placeholder="any state", clearable=True, style=small),
        html.Button("< previous", id="run-elements-prev", n_clicks=0), html.Span(id="run-elements-info", style={"margin": "0 1em"}),
        html.Button("next >", id="run-elements-next", n_clicks=0),
        dcc.Store(id="run-elements-page", data=0),
    ]), html.Div(id="run-elements"), section_id="run-elements-section")  # fmt: skip


def settled(run: dict | None) -> bool:
    return run is None or run.get("state") in RUN_SETTLED


def refresh_ms(n_tasks: int) -> int:
    return 1000 * (REFRESH_SECONDS if n_tasks <= TABLE_MAX_ROWS else SLOW_REFRESH_SECONDS)


def content(source: SiteSource, run_id: str, now: float,
            selected_task: str | None = None) -> tuple[list[Any], graph_view.Drawn, bool, int]:  # fmt: skip
    """The page's sections, its graph (*selected_task* is the task clicked in it), whether the run
    settled (then refreshing stops), and the refresh period in ms."""
    run = source.run(run_id)
    if run is None:
        # keep looking: a run started a moment ago reaches the records in the agent's next batch
        missing = graph_view.not_drawn(None, graph_view.WAITING)
        return [html.P(f"no run {run_id} (yet)", id="run-missing")], missing, False, refresh_ms(0)
    tasks = source.plain_tasks(run_id)
    grouped = {row.task: row for row in source.summary(run_id)}
    states = {t["name"]: t["state"] for t in tasks}
    n_failed = sum(row.counts.get("failed", 0) for row in grouped.values())
    failed = source.failures(run_id, FAILURES_SHOWN) if n_failed else []
    return [
        header(run, now),
        progress_bar(states),
        section("Tasks", tasks_table(run_id, tasks, grouped)),
        section("Timeline", dcc.Graph(id="run-timeline", figure=figure(tasks, now), config={"displaylogo": False}),
                section_id="run-timeline-section"),
        section(f"Failures ({n_failed})", *[failure(run_id, t) for t in failed],
                html.P(f"{n_failed - len(failed)} more failures: see the elements below", id="run-failures-more")
                if n_failed > len(failed) else None, section_id="run-failures"),
        section("Provenance", provenance(run.get("provenance") or {})),
    ], graph(source, run_id, tasks, grouped, selected_task), settled(run), refresh_ms(len(tasks))  # fmt: skip


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


def shape(pipeline: Pipeline) -> dict[str, dict[str, list[str]]]:
    """Task -> ``{"inputs", "after"}``, as a run's provenance keeps its graph."""
    return {t.name: {"inputs": list(t.inputs), "after": [u for u in t.upstream if u not in t.inputs]}
            for t in pipeline.tasks.values()}  # fmt: skip


def graph(source: SiteSource, run_id: str, tasks: list[dict], grouped: dict[str, TaskSummary],
          selected_task: str | None = None) -> graph_view.Drawn:  # fmt: skip
    """The task graph coloured by state when the source gives the pipeline, else the source's SVG,
    else a line saying why there is none."""
    if len(tasks) > GRAPH_MAX_TASKS:
        return graph_view.not_drawn(html.P(f"graph not drawn: {len(tasks)} tasks (more than {GRAPH_MAX_TASKS})",
                                           id="run-graph-none"))  # fmt: skip
    pipeline = source.graph(run_id)
    if pipeline is not None:
        drills = {name: drill_href(run_id, name, "") for name, row in grouped.items() if row.elements is not None}
        drawn = shape(pipeline)
        return graph_view.drawn(drawn, graph_view.elements(drawn, {t["name"]: t for t in tasks}, drills), selected_task)
    image = source.graph_svg(run_id)
    if not image:
        return graph_view.not_drawn(html.P("no graph for this run", id="run-graph-none"))
    data = base64.b64encode(image.encode()).decode()
    return graph_view.not_drawn(html.Img(id="run-graph-svg", src=f"data:image/svg+xml;base64,{data}",
                                         alt=f"task graph of run {run_id}", style={"maxWidth": "100%"}))  # fmt: skip


STYLE_PRE = {"background": "#f8fafc", "padding": "0.5em", "overflowX": "auto", "margin": "0.2em 0"}


def failure(run_id: str, task: dict) -> html.Div:
    """A failed task or element: where, the error, a link to its worker's log, its inputs and its remote traceback."""
    where = task.get("host") or "?"
    if task.get("slurm_job"):
        where += f", Slurm job {task['slurm_job']}"
    return html.Div(id=f"failure-{task['name']}", className="failure", children=[
        html.H3(f"{task['name']} on {where} (attempt {task.get('attempts') or 1})", style={"fontSize": "1em"}),
        html.P(task.get("error") or "failed", className="failure-error", style={"color": "#dc2626"}),
        html.P(dcc.Link("its Slurm job's output around the failure" if task.get("slurm_job") else "its worker's log around the failure",
                        href=task_href(run_id, task["name"]), id=f"worker-log-{task['name']}", className="failure-log")),
        html.Div(["inputs: ", html.Code(task["inputs"], id=f"inputs-{task['name']}", className="failure-inputs")])
        if task.get("inputs") else None,
        html.Pre(task.get("traceback") or "(no traceback recorded)", id=f"traceback-{task['name']}", style=STYLE_PRE),
    ])  # fmt: skip


def drill_href(run_id: str, task: str, state: str) -> str:
    """The run page with its Elements section on *task*'s elements in *state* (see :func:`drilled`)."""
    return f"/runs/{quote(run_id, safe='')}?{urlencode({'task': task, 'state': state})}"


def drilled(search: str | None) -> tuple[str | None, str | None] | None:
    """``(task, state)`` asked for by a drill link's query (``?task=clean&state=failed``), else None."""
    query = parse_qs((search or "").lstrip("?"))
    if not query.get("task"):
        return None
    state = (query.get("state") or [None])[0]
    return query["task"][0], state if state in STATES else None


def counts_cell(run_id: str, row: TaskSummary | None) -> Any:
    """A map's elements by state, each count a link that opens those elements below. (Links, not
    buttons: a refresh of the page re-renders them, which must not look like a click.)"""
    if row is None or row.elements is None:
        return "-"
    links = [dcc.Link(f"{state} {row.counts[state]}", href=drill_href(run_id, row.task, state), className=f"drill drill-{state}",
                      title=f"show the {state} elements of {row.task}",
                      style={"marginRight": "4px", "padding": "0 4px", "border": f"1px solid {PALETTE.get(state, PALETTE['pending'])[1]}",
                             "background": PALETTE.get(state, PALETTE["pending"])[0], "textDecoration": "none", "color": "inherit"})
             for state in STATES if row.counts.get(state)]  # fmt: skip
    return html.Span(links or "no elements", className="element-counts")


def tasks_table(run_id: str, tasks: list[dict], grouped: dict[str, TaskSummary] | None = None) -> html.Div:
    """Every task (a map's elements counted by state), or for a run of many tasks the failed and
    running ones first, up to :data:`TABLE_MAX_ROWS`."""
    grouped = grouped or {}
    shown = tasks
    if len(tasks) > TABLE_MAX_ROWS:
        rank = {"failed": 0, "running": 1}
        shown = sorted(tasks, key=lambda t: rank.get(t["state"], 2))[:TABLE_MAX_ROWS]
    rows = []
    for t in shown:
        took = t["ended"] - t["started"] if t.get("ended") and t.get("started") else None
        cached = html.Span("cached", className="cached-mark") if t.get("cached") or t["state"] == "cached" else ""
        row = grouped.get(t["name"])
        rows.append((f"task-{t['name']}", [
            t["name"], state_badge(t["state"]), cached, row.elements if row and row.elements is not None else "-",
            counts_cell(run_id, row), t.get("host") or "-", t.get("slurm_job") or "-", t.get("attempts") or 0,
            when(t.get("started")), duration(took), t.get("error") or "",
        ]))  # fmt: skip
    hidden = len(tasks) - len(shown)
    headers = ("task", "state", "cached", "elements", "elements by state", "host", "slurm job", "attempts", "started", "took", "error")
    return html.Div([
        table("run-tasks", headers, rows),
        html.P(f"{hidden} more tasks not shown", id="run-tasks-hidden") if hidden else None,
    ])  # fmt: skip


def provenance(record: dict) -> html.Dl:
    items: list[Any] = []
    for key in sorted(record):
        value = record[key]
        shown = str(value)
        if isinstance(value, (dict, list)):  # folded: a run's graph alone can be hundreds of lines
            shown = html.Details([html.Summary(f"{len(value)} {'entries' if isinstance(value, dict) else 'items'}"),
                                  html.Pre(json.dumps(value, indent=2, sort_keys=True))])  # fmt: skip
        items += [html.Dt(key, style={"fontWeight": "bold"}), html.Dd(shown, id=f"provenance-{key}")]
    return html.Dl(items or [html.Dt("no provenance recorded")], id="run-provenance")


# -- the drill-down -------------------------------------------------------------


def element_step(index: int, triggered: str | None) -> int:
    """The page after a click on previous/next; a new task or state goes back to the first page."""
    return runs_step(index, triggered, "run-elements", ("run-elements-task", "run-elements-state"))


def elements_page(source: SiteSource, run_id: str, task: str | None, state: str | None, index: int) -> tuple:
    """``(task options, table, "clean: elements 51-100 of 9990", previous disabled, next disabled)``
    for page *index* of a mapped task's elements (the first mapped task if *task* is not one; the
    last page if *index* is past it): one grouped query for the counts, one for the page."""
    maps = [row for row in source.summary(run_id) if row.elements is not None]
    options = [row.task for row in maps]
    if not maps:
        return options, html.P("no mapped task in this run (yet)", id="run-elements-none"), "", True, True
    row = next((r for r in maps if r.task == task), maps[0])
    total = row.recorded(state)
    index = min(max(int(index or 0), 0), max((total - 1) // ELEMENTS_PAGE, 0))
    found = source.elements(run_id, row.task, state=state, limit=ELEMENTS_PAGE, offset=index * ELEMENTS_PAGE) if total else []
    what = f"{row.task}: {state + ' ' if state else ''}elements"
    if not found:
        return options, html.P(f"no {what} recorded", id="run-elements-empty"), f"{what} 0 of 0", True, True
    first = index * ELEMENTS_PAGE + 1
    info = f"{what} {first}-{first + len(found) - 1} of {total}"
    return options, elements_table(found), info, index == 0, first - 1 + len(found) >= total


def elements_table(rows: list[dict]) -> html.Table:
    body = []
    for e in rows:
        took = e["ended"] - e["started"] if e.get("ended") and e.get("started") else None
        trace = html.Details([html.Summary("traceback"), html.Pre(e["traceback"], style=STYLE_PRE)]) if e.get("traceback") else ""
        body.append((f"element-{e['name']}", [
            e["index"], state_badge(e["state"]), e.get("host") or "-", e.get("slurm_job") or "-", e.get("attempts") or 0,
            when(e.get("started")), duration(took), e.get("error") or "", html.Code(e["inputs"]) if e.get("inputs") else "", trace,
        ]))  # fmt: skip
    headers = ("element", "state", "host", "slurm job", "attempts", "started", "took", "error", "inputs", "traceback")
    return table("run-elements-table", headers, body)
