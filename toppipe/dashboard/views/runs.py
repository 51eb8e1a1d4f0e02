"""``/runs``: every run, newest first, one page of :data:`PAGE_SIZE` at a time (queried server-side)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from dash import dcc, html

from toppipe.dashboard.formats import duration, when
from toppipe.dashboard.source import SiteSource
from toppipe.dashboard.widgets import state_badge, table

PAGE_SIZE = 50
RUN_STATES = ("running", "done", "failed", "cancelled", "interrupted")
REFRESH_SECONDS = 5


def layout() -> html.Div:
    return html.Div(id="runs-page", children=[
        dcc.Interval(id="runs-interval", interval=REFRESH_SECONDS * 1000),
        dcc.Store(id="runs-page-index", data=0),
        html.Div(id="runs-filters", children=[
            dcc.Input(id="runs-filter-pipeline", type="text", placeholder="pipeline", debounce=True),
            dcc.Dropdown(id="runs-filter-state", options=list(RUN_STATES), placeholder="state", clearable=True,
                         style={"width": "12em", "display": "inline-block", "verticalAlign": "middle", "marginLeft": "1em"}),
        ]),
        html.Div(id="runs-pager", children=[
            html.Button("< newer", id="runs-prev", n_clicks=0), html.Span(id="runs-page-info", style={"margin": "0 1em"}),
            html.Button("older >", id="runs-next", n_clicks=0),
        ]),
        html.Div(id="runs-content"),
    ])  # fmt: skip


def clamp(page: int, total: int) -> int:
    """*page* within ``[0, last page]`` for *total* runs."""
    last = max((total - 1) // PAGE_SIZE, 0)
    return min(max(int(page or 0), 0), last)


def page(source: SiteSource, index: int, pipeline: str | None = None, state: str | None = None) -> tuple[Any, str, int, int]:
    """``(table, "runs 51-100 of 10000", index, total)``: one ``count_runs`` and one ``runs(limit, offset)`` query."""
    pipeline, state = (pipeline or "").strip() or None, state or None
    total = source.count_runs(pipeline=pipeline, state=state)
    index = clamp(index, total)
    rows = source.runs(limit=PAGE_SIZE, offset=index * PAGE_SIZE, pipeline=pipeline, state=state) if total else []
    if not rows:
        return html.P("no runs" + (" match" if pipeline or state else " yet"), id="runs-empty"), "runs 0 of 0", 0, 0
    first = index * PAGE_SIZE + 1
    return runs_table(rows), f"runs {first}-{first + len(rows) - 1} of {total}", index, total


def runs_table(rows: list[dict]) -> html.Table:
    body = []
    for r in rows:
        took = r["ended"] - r["started"] if r.get("ended") and r.get("started") else None
        body.append((f"run-row-{r['id']}", [
            dcc.Link(r["id"], href=f"/runs/{quote(r['id'], safe='')}", id=f"run-link-{r['id']}"), r["pipeline"], state_badge(r["state"]),
            when(r.get("started")), duration(took), r.get("tasks_total") or "-", r.get("error") or "",
        ]))  # fmt: skip
    return table("runs-table", ("run", "pipeline", "state", "started", "took", "tasks", "error"), body)


def step(index: int, triggered: str | None, pager: str = "runs",
         filters: tuple[str, ...] = ("runs-filter-pipeline", "runs-filter-state")) -> int:  # fmt: skip
    """The page after a click on ``<pager>-prev``/``<pager>-next``; a change of one of *filters*
    goes back to the first page."""
    if triggered == f"{pager}-next":
        return index + 1
    if triggered == f"{pager}-prev":
        return max(index - 1, 0)
    if triggered in filters:
        return 0
    return index
