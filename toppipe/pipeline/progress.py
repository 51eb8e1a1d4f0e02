"""A run's live progress: a bar in Jupyter (one display, updated in place) or
one line in a terminal, refreshed until every task settled."""

from __future__ import annotations

import html
import sys
import time

from toppipe.pipeline.render import PALETTE

ORDER = ("done", "cached", "running", "pending", "failed", "cancelled", "interrupted")


def counts(states: dict[str, str]) -> dict[str, int]:
    found = {state: 0 for state in ORDER}
    for state in states.values():
        found[state] = found.get(state, 0) + 1
    return found


def line(run_id: str, states: dict[str, str], width: int = 30) -> str:
    """``run X [#####.....] 5/10 (done 4, cached 1, running 2, failed 0)``"""
    n = counts(states)
    total = max(len(states), 1)
    finished = n["done"] + n["cached"] + n["failed"] + n["cancelled"] + n["interrupted"]
    filled = round(width * finished / total)
    detail = ", ".join(f"{state} {n[state]}" for state in ORDER if n[state] or state in ("done", "failed"))
    return f"run {run_id} [{'#' * filled}{'.' * (width - filled)}] {finished}/{len(states)} ({detail})"


def bar_html(run_id: str, pipeline: str, states: dict[str, str]) -> str:
    n, total = counts(states), max(len(states), 1)
    segments = "".join(
        f'<div style="width:{100 * n[s] / total:.1f}%;background:{PALETTE.get(s, PALETTE["pending"])[1]}" title="{s} {n[s]}"></div>'
        for s in ORDER
        if n[s]
    )
    failed = [html.escape(t) for t, s in states.items() if s == "failed"]
    return (
        f"<div><b>run {html.escape(run_id)}</b> of {html.escape(pipeline)}: {html.escape(line(run_id, states).split('] ', 1)[1])}"
        f'<div style="display:flex;height:12px;width:100%;border:1px solid #999">{segments}</div>'
        + (f"<div>failed: {', '.join(failed)}</div>" if failed else "")
        + "</div>"
    )


def _in_jupyter() -> bool:
    shell = sys.modules.get("IPython")
    try:
        return shell is not None and type(shell.get_ipython()).__name__ == "ZMQInteractiveShell"
    except Exception:
        return False


def show_progress(run, interval: float = 0.5, timeout: float | None = None) -> dict[str, str]:
    """Refresh the run's progress every *interval* seconds until it settles (or *timeout*); its last states."""
    deadline = None if timeout is None else time.monotonic() + timeout
    handle = None
    if _in_jupyter():
        from IPython.display import HTML, display

        handle = display(HTML(bar_html(run.id, run.pipeline, run.status())), display_id=True)
    while True:
        states = run.status()
        settled = all(s in ("done", "cached", "failed", "cancelled", "interrupted") for s in states.values())
        if handle is not None:
            from IPython.display import HTML

            handle.update(HTML(bar_html(run.id, run.pipeline, states)))
        else:
            print("\r" + line(run.id, states), end="" if not settled else "\n", file=sys.stderr, flush=True)
        if settled or (deadline is not None and time.monotonic() > deadline):
            return states
        time.sleep(interval)
