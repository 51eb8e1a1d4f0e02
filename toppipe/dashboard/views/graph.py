"""The run page's task graph: dash-cytoscape laid out by dagre (layers left to right, as
:func:`toppipe.pipeline.render.svg` draws them for notebooks), nodes coloured by state from
:data:`~toppipe.pipeline.render.PALETTE`, input edges solid and ``after`` edges dashed.
Clicking a node selects its task: :func:`selected` says what it is and links to its row, its
failure and its elements. Cytoscape's scripts, dagre's included, are served from the package."""

from __future__ import annotations

from typing import Any, NamedTuple

import dash_cytoscape as cyto
from dash import dcc, html

from toppipe.dashboard.formats import duration
from toppipe.dashboard.widgets import state_badge
from toppipe.pipeline.render import BOX_HEIGHT, BOX_PADDING, CHAR_WIDTH, EDGE_COLOUR, PALETTE

cyto.load_extra_layouts()  # dagre: its script comes with dash-cytoscape (dash_cytoscape_extra.min.js)

LAYOUT = {"name": "dagre", "rankDir": "LR", "nodeSep": 12, "rankSep": 48, "edgeSep": 6, "fit": True, "padding": 12,
          "animate": False}  # fmt: skip


def stylesheet() -> list[dict]:
    """Boxes sized to their names in the palette's colours; the selected task outlined."""
    rules: list[dict] = [
        {"selector": "node", "style": {
            "shape": "round-rectangle", "label": "data(id)", "width": "data(width)", "height": BOX_HEIGHT,
            "text-valign": "center", "text-halign": "center", "font-family": "ui-monospace, Menlo, Consolas, monospace",
            "font-size": 12, "color": "#0f172a", "border-width": 1.5,
            "background-color": PALETTE[None][0], "border-color": PALETTE[None][1]}},
        {"selector": "edge", "style": {
            "curve-style": "bezier", "width": 1.2, "line-color": EDGE_COLOUR, "target-arrow-color": EDGE_COLOUR,
            "target-arrow-shape": "triangle", "arrow-scale": 0.8}},
        {"selector": "edge[kind = 'after']", "style": {"line-style": "dashed"}},
        {"selector": "node:selected", "style": {"border-width": 3, "border-color": "#0f172a"}},
    ]  # fmt: skip
    for state, (fill, stroke) in PALETTE.items():
        if state:
            rules.insert(-1, {"selector": f"node[state = '{state}']", "style": {"background-color": fill, "border-color": stroke}})
    return rules


STYLESHEET = stylesheet()


def height(graph: dict[str, dict]) -> int:
    """Pixels for the canvas: room for the tallest layer (tasks that wait for as many others
    before them) at about natural size; dagre fits the graph in it."""
    layer: dict[str, int] = {}

    def depth(name: str, seen: frozenset = frozenset()) -> int:
        if name not in layer:
            before = [u for key in ("inputs", "after") for u in graph[name].get(key, ()) if u in graph and u not in seen]
            layer[name] = 1 + max((depth(u, seen | {name}) for u in before), default=-1)
        return layer[name]

    sizes: dict[int, int] = {}
    for name in graph:
        sizes[depth(name)] = sizes.get(depth(name), 0) + 1
    tallest = max(sizes.values(), default=0)
    return int(min(max(tallest * (BOX_HEIGHT + 18) * 1.4 + 60, 160), 760))


def elements(graph: dict[str, dict], tasks: dict[str, dict], drills: dict[str, str] | None = None) -> list[dict]:
    """Cytoscape's elements: one node per task of *graph* (task -> ``{"inputs", "after"}``),
    carrying its row from *tasks* (state, host, ...) and, for a map, the link to its elements
    from *drills*; one edge per dependency."""
    drills = drills or {}
    nodes, edges = [], []
    for name, edges_of in graph.items():
        row = tasks.get(name, {})
        took = row["ended"] - row["started"] if row.get("ended") and row.get("started") else None
        nodes.append({"data": {
            "id": name, "width": round(len(name) * CHAR_WIDTH + 2 * BOX_PADDING, 1), "state": row.get("state") or "pending",
            "host": row.get("host"), "slurm_job": row.get("slurm_job"), "attempts": row.get("attempts") or 0,
            "took": duration(took) if took is not None else None, "error": row.get("error"), "elements": drills.get(name),
        }})  # fmt: skip
        inputs = list(edges_of.get("inputs", ()))
        for upstream in inputs:
            edges.append({"data": {"source": upstream, "target": name, "kind": "input"}})
        for upstream in edges_of.get("after", ()):
            if upstream not in inputs:
                edges.append({"data": {"source": upstream, "target": name, "kind": "after"}})
    return nodes + [e for e in edges if e["data"]["source"] in graph]


class Drawn(NamedTuple):
    """What a refresh sets on the page's graph: its elements, the line above it (why there is no
    graph, or a source's SVG), the line under it (the selected task) and the canvas's style."""

    elements: list[dict]
    note: Any
    selected: Any
    style: dict


def drawn(graph: dict[str, dict], found: list[dict], selected_task: str | None = None) -> Drawn:
    """*graph* drawn as its *found* elements, with *selected_task* (the node clicked last) said under it."""
    chosen = next((e["data"] for e in found if e["data"].get("id") == selected_task), None)
    return Drawn(found, None, selected(chosen), {"height": f"{height(graph)}px"})


def not_drawn(note: Any, style: dict | None = None) -> Drawn:
    """No graph: *note* says why (or is a source's own picture of it); the canvas is hidden, or
    has *style* (a run not recorded yet keeps its empty canvas)."""
    return Drawn([], note, None, style or HIDDEN)


HIDDEN = {"display": "none"}
#: The canvas before the first refresh: shown (Cytoscape lays out nothing right in a hidden box).
WAITING = {"height": "160px"}


def canvas() -> html.Div:
    """The graph's place on the run page (``run-graph``), filled by each refresh (:class:`Drawn`).
    It stays on the page across refreshes: new states recolour its nodes, and the zoom, the pan
    and the selection are kept."""
    return html.Div([
        html.Div(id="run-graph-note"),
        cyto.Cytoscape(id="run-graph", elements=[], layout=LAYOUT, stylesheet=STYLESHEET, className="run-graph",
                       style=WAITING, minZoom=0.2, maxZoom=1.5, boxSelectionEnabled=False, autoungrabify=True,
                       responsive=True),  # fit again when it is shown or resized
        html.Div(id="run-graph-selected", className="graph-selected"),
    ])  # fmt: skip


def selected(node: dict | None) -> Any:
    """What the line under the graph says of a clicked node (its ``data``): the task, its state,
    where it ran, its error, and links to its row, its failure and (a map) its elements."""
    if not node or not node.get("id"):
        return "click a task to select it"
    name = node["id"]
    where = ", ".join(part for part in (node.get("host") and f"on {node['host']}",
                                         node.get("slurm_job") and f"Slurm job {node['slurm_job']}",
                                         node.get("took") and f"took {node['took']}",
                                         node.get("attempts") and f"attempts {node['attempts']}") if part)  # fmt: skip
    links: list[Any] = [html.A("its row", href=f"#task-{name}", className="graph-link")]
    if node.get("state") == "failed":
        links += [" · ", html.A("its failure", href=f"#failure-{name}", className="graph-link")]
    if node.get("elements"):
        links += [" · ", dcc.Link("its elements", href=node["elements"], className="graph-link")]
    return [html.B(name, id="run-graph-selected-task"), " ", state_badge(node.get("state")), f" {where}" if where else "",
            html.Span(f" {node['error']}", style={"color": "#dc2626"}) if node.get("error") else "", " - ", *links]  # fmt: skip
