"""A pipeline as text, and as a self-contained SVG: no graphviz, no fonts to fetch, no ids to clash.

Tasks sit in columns by layer (the longest path from a task that waits for
nothing), left to right; an input edge is solid, an ``after`` edge dashed.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Mapping
from xml.sax.saxutils import escape, quoteattr

from toppipe.pipeline.graph import REQUIRED, PipelineError

if TYPE_CHECKING:
    from toppipe.pipeline.graph import Pipeline

#: Box colours (fill, stroke) by task state; ``None`` is a task with no state.
PALETTE: dict[str | None, tuple[str, str]] = {
    None: ("#f8fafc", "#475569"),
    "pending": ("#f1f5f9", "#94a3b8"),
    "running": ("#dbeafe", "#2563eb"),
    "done": ("#dcfce7", "#16a34a"),
    "failed": ("#fee2e2", "#dc2626"),
    "cached": ("#f3e8ff", "#9333ea"),
}
FONT = "font-family='ui-monospace, Menlo, Consolas, monospace' font-size='12'"
CHAR_WIDTH = 7.3  # of a 12px monospace character, a little generous
BOX_HEIGHT = 28
BOX_PADDING = 10
COLUMN_GAP = 56
ROW_GAP = 14
MARGIN = 12
EDGE_COLOUR = "#64748b"


def text(pipeline: Pipeline) -> str:
    """A header, then one line per task in order: ``name  <- inputs; after names; params x=1, y``."""
    tasks, order = pipeline.tasks, pipeline.order()
    width = max((len(name) for name in order), default=0)
    lines = [f"pipeline {pipeline.name!r}: {len(tasks)} task{'' if len(tasks) == 1 else 's'}"]
    for name in order:
        found, parts = tasks[name], []
        if found.inputs:
            parts.append("<- " + ", ".join(found.inputs))
        if waits := [n for n in found.after if n not in found.inputs]:
            parts.append("after " + ", ".join(waits))
        if found.params:
            parts.append("params " + ", ".join(_param(k, v) for k, v in found.params.items()))
        lines.append(f"  {name:<{width}}  {'; '.join(parts)}".rstrip())
    return "\n".join(lines)


def svg(pipeline: Pipeline, states: Mapping[str, str] | None = None) -> str:
    """The SVG of *pipeline*; *states* (task -> a :data:`PALETTE` key) colours the boxes."""
    states = dict(states or {})
    for name, state in states.items():
        if name not in pipeline:
            raise PipelineError(f"pipeline {pipeline.name!r} has no task {name!r} to colour")
        if state not in PALETTE:
            known = ", ".join(key for key in PALETTE if key)
            raise PipelineError(f"task {name!r}: unknown state {state!r}; use one of {known}")
    tasks = pipeline.tasks
    if not tasks:
        return _document(160, 2 * MARGIN + BOX_HEIGHT, pipeline.name,
                         [f"<text x='{MARGIN}' y='{MARGIN + 18}' {FONT} fill='#475569'>(no tasks)</text>"])
    boxes, layer = _layout(pipeline)
    edges = [(u, t.name, "input" if u in t.inputs else "after") for t in tasks.values() for u in t.upstream]
    rise = {(u, v): _rise(layer[v] - layer[u]) for u, v, _ in edges}
    headroom = max(rise.values(), default=0)
    boxes = {name: (x, y + headroom, w) for name, (x, y, w) in boxes.items()}
    parts = [_edge(u, v, kind, boxes[u], boxes[v], rise[(u, v)]) for u, v, kind in edges]
    for name, (x, y, width) in boxes.items():
        parts.append(_box(name, states.get(name), x, y, width))
    width = max(x + w for x, _, w in boxes.values()) + MARGIN
    height = max(y for _, y, _ in boxes.values()) + BOX_HEIGHT + MARGIN
    return _document(width, height, pipeline.name, parts)


def _rise(span: int) -> float:
    """How far above its ends an edge arcs: 0 between adjacent layers, else over the boxes it skips."""
    return 0.0 if span <= 1 else 30.0 + 16.0 * (span - 2)


def _layout(pipeline: Pipeline) -> tuple[dict[str, tuple[float, float, float]], dict[str, int]]:
    """Name -> (x, y, width) of its box, and name -> its layer (column)."""
    tasks, order = pipeline.tasks, pipeline.order()
    layer: dict[str, int] = {}
    for name in order:
        layer[name] = 1 + max((layer[u] for u in tasks[name].upstream), default=-1)
    columns: list[list[str]] = [[] for _ in range(max(layer.values()) + 1)]
    for name in order:
        columns[layer[name]].append(name)
    index = {name: position for position, name in enumerate(order)}
    row: dict[str, float] = {}

    def place(name: str) -> tuple[float, int]:  # near the tasks it waits for, else in order
        rows = [row[u] for u in tasks[name].upstream]
        return (sum(rows) / len(rows) if rows else 0.0, index[name])

    for column in columns:
        column.sort(key=place)
        for position, name in enumerate(column):
            row[name] = position
    tallest = max(len(column) for column in columns)
    boxes, x = {}, float(MARGIN)
    for column in columns:
        widths = {name: len(name) * CHAR_WIDTH + 2 * BOX_PADDING for name in column}
        column_width = max(widths.values())
        top = MARGIN + (tallest - len(column)) * (BOX_HEIGHT + ROW_GAP) / 2
        for position, name in enumerate(column):
            y = top + position * (BOX_HEIGHT + ROW_GAP)
            boxes[name] = (x + (column_width - widths[name]) / 2, y, widths[name])
        x += column_width + COLUMN_GAP
    return boxes, layer


def _box(name: str, state: str | None, x: float, y: float, width: float) -> str:
    fill, stroke = PALETTE[state]
    title = escape(name if state is None else f"{name}: {state}")
    return (
        f"<g class='task' data-task={quoteattr(name)}><title>{title}</title>"
        f"<rect x='{x:.1f}' y='{y:.1f}' width='{width:.1f}' height='{BOX_HEIGHT}' rx='5'"
        f" fill='{fill}' stroke='{stroke}' stroke-width='1.5'/>"
        f"<text x='{x + width / 2:.1f}' y='{y + BOX_HEIGHT / 2 + 4:.1f}' text-anchor='middle' {FONT}"
        f" fill='#0f172a'>{escape(name)}</text></g>"
    )


def _edge(source: str, target: str, kind: str, start: tuple, end: tuple, rise: float) -> str:
    """Right side of *source* to left side of *target*, leaving and arriving level; arcs up by *rise*."""
    x1, y1 = start[0] + start[2], start[1] + BOX_HEIGHT / 2
    x2, y2 = end[0], end[1] + BOX_HEIGHT / 2
    tip = x2 - 7
    if rise:
        top, middle = min(y1, y2) - rise, (x1 + tip) / 2
        bend = (middle - x1) / 2
        curve = (f"C{x1 + bend:.1f},{y1:.1f} {middle - bend:.1f},{top:.1f} {middle:.1f},{top:.1f} "
                 f"C{middle + bend:.1f},{top:.1f} {tip - bend:.1f},{y2:.1f} {tip:.1f},{y2:.1f}")
    else:
        bend = max(20.0, (tip - x1) / 2)
        curve = f"C{x1 + bend:.1f},{y1:.1f} {tip - bend:.1f},{y2:.1f} {tip:.1f},{y2:.1f}"
    dash = " stroke-dasharray='5,4'" if kind == "after" else ""
    return (
        f"<g class='edge {kind}' data-from={quoteattr(source)} data-to={quoteattr(target)}>"
        f"<title>{escape(source)} \u2192 {escape(target)}{' (after)' if kind == 'after' else ''}</title>"
        f"<path d='M{x1:.1f},{y1:.1f} {curve}' fill='none' stroke='{EDGE_COLOUR}' stroke-width='1.3'{dash}/>"
        f"<polygon points='{tip:.1f},{y2 - 4:.1f} {x2:.1f},{y2:.1f} {tip:.1f},{y2 + 4:.1f}' fill='{EDGE_COLOUR}'/></g>"
    )


def _document(width: float, height: float, name: str, parts: list[str]) -> str:
    width, height = math.ceil(width), math.ceil(height)
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}'"
        f" viewBox='0 0 {width} {height}' role='img' aria-label={quoteattr(f'pipeline {name}')}>"
        f"<title>{escape(f'pipeline {name}')}</title>{''.join(parts)}</svg>"
    )


def _param(name: str, default: object) -> str:
    return name if default is REQUIRED else f"{name}={default!r}"
