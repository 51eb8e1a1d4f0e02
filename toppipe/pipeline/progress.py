"""A run's live progress, refreshed until every task settled: in Jupyter a table
(one display, updated in place) with a row per task and a map's elements
counted by state; in a terminal one line, a map's counts at its end. A run of
ten thousand elements is read with one grouped query per refresh
(:meth:`Run.summary`), never element by element."""

from __future__ import annotations

import sys
import time

from toppipe.pipeline.summary import SETTLED, RunSummary, html_table

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


def _in_jupyter() -> bool:
    shell = sys.modules.get("IPython")
    try:
        return shell is not None and type(shell.get_ipython()).__name__ == "ZMQInteractiveShell"
    except Exception:
        return False


def summary_line(found: RunSummary, width: int = 30) -> str:
    """:func:`line` of the tasks, then each map's elements: ``| clean 4512/10000 (done 4500, failed 12)``."""
    maps = [f"{row.task} {row.text().split('  ', 2)[2]}" for row in found if row.elements is not None]
    return line(found.run_id, found.states, width) + "".join(f" | {text}" for text in maps)


def show_progress(run, interval: float = 0.5, timeout: float | None = None) -> dict[str, str]:
    """Refresh the run's progress every *interval* seconds until it settles (or *timeout*); its last states."""
    deadline = None if timeout is None else time.monotonic() + timeout
    handle = None
    while True:
        found = run.summary()
        states = found.states
        settled = all(s in SETTLED for s in states.values())
        if _in_jupyter():
            from IPython.display import HTML, display

            if handle is None:
                handle = display(HTML(html_table(found)), display_id=True)
            else:
                handle.update(HTML(html_table(found)))
        else:
            print("\r" + summary_line(found), end="" if not settled else "\n", file=sys.stderr, flush=True)
        if settled or (deadline is not None and time.monotonic() > deadline):
            return states
        time.sleep(interval)
