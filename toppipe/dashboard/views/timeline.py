"""A run's tasks on a timeline, one row (lane) per concurrent slot of each worker host."""

from __future__ import annotations

import heapq
from collections import defaultdict

import plotly.graph_objects as go

from toppipe.dashboard.formats import duration
from toppipe.pipeline.render import PALETTE


def lanes(tasks: list[dict], now: float) -> list[tuple[str, dict, float, float]]:
    """``(lane, task, start, end)`` for every started task; a running one ends *now*.

    Tasks of one host that overlap in time go to separate lanes (``host #2``), so
    each bar is visible; a lane is reused as soon as its last task ended.
    """
    by_host: dict[str, list[dict]] = defaultdict(list)
    for t in tasks:
        if t.get("started") is not None:
            by_host[t.get("host") or "?"].append(t)
    placed = []
    for host in sorted(by_host):
        free: list[tuple[float, int]] = []  # (ends at, lane number), the earliest-free lane first
        count = 0
        for t in sorted(by_host[host], key=lambda t: t["started"]):
            start, end = t["started"], t.get("ended") or max(now, t["started"])
            if free and free[0][0] <= start:
                _, number = heapq.heappop(free)
            else:
                count += 1
                number = count
            heapq.heappush(free, (end, number))
            placed.append((host if number == 1 else f"{host} #{number}", t, start, end))
    return placed


def figure(tasks: list[dict], now: float) -> go.Figure:
    """Horizontal bars, seconds since the first task started, coloured by state; one trace per state."""
    placed = lanes(tasks, now)
    origin = min((start for _, _, start, _ in placed), default=now)
    traces: dict[str, dict[str, list]] = defaultdict(lambda: {"y": [], "base": [], "x": [], "text": []})
    for lane, t, start, end in placed:
        trace = traces[t["state"]]
        trace["y"].append(lane)
        trace["base"].append(start - origin)
        trace["x"].append(max(end - start, 0.001))
        job = f", Slurm job {t['slurm_job']}" if t.get("slurm_job") else ""
        trace["text"].append(f"{t['name']}: {t['state']}, {duration(end - start)}{job}")
    fig = go.Figure([
        go.Bar(name=state, orientation="h", y=v["y"], base=v["base"], x=v["x"], hovertext=v["text"], hoverinfo="text",
               marker={"color": PALETTE.get(state, PALETTE[None])[1]})
        for state, v in traces.items()
    ])  # fmt: skip
    order = list(dict.fromkeys(lane for lane, *_ in placed))
    fig.update_layout(barmode="overlay", height=120 + 28 * len(order), margin={"l": 10, "r": 10, "t": 10, "b": 40},
                      xaxis_title="seconds since the first task started",
                      yaxis={"categoryorder": "array", "categoryarray": order, "autorange": "reversed"},
                      legend={"orientation": "h"}, uirevision="timeline")  # fmt: skip
    return fig
