"""A run grouped by task: one row per task, a map's elements counted by state.

A map's elements are recorded as ``task[index]``; a run of ten thousand
elements is shown as its few tasks, each with counts such as ``done 9990,
failed 10``, and drilled into a page of elements at a time. The functions here
are pure: the counts come from one ``GROUP BY`` of the record store
(:meth:`toppipe.records.RecordStore.element_counts`) or, for rows already at
hand, from :func:`count_elements`.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Iterable, Mapping

#: States in the order they are shown. ``skipped``: an element never run, its upstream element failed.
STATES = ("done", "cached", "running", "pending", "failed", "cancelled", "interrupted", "skipped")
SETTLED = {"done", "cached", "failed", "cancelled", "interrupted", "skipped"}
#: Bar colours by state (the graph's palette, plus the states it has no box colour for).
COLOURS = {"done": "#16a34a", "cached": "#9333ea", "running": "#2563eb", "pending": "#94a3b8", "failed": "#dc2626",
           "cancelled": "#475569", "interrupted": "#b45309", "skipped": "#cbd5e1"}  # fmt: skip


def split(name: str) -> tuple[str, int | None]:
    """``("clean", 7)`` for the element ``clean[7]``, ``("clean", None)`` for the task ``clean``."""
    if name.endswith("]") and "[" in name:
        task, _, index = name[:-1].partition("[")
        if index.isdigit():
            return task, int(index)
    return name, None


def run_order(records: list[dict]) -> list[dict]:
    """Task records in their run's order, read from their dask keys (``<function>-<run>-<position>``,
    :func:`toppipe.pipeline.keys.dask_key`); records without one last, in the order given."""

    def position(record: dict) -> float:
        last = (record.get("dask_key") or "").rsplit("-", 1)[-1]
        return int(last) if last.isdigit() else float("inf")

    return sorted(records, key=position)


def count_elements(rows: Iterable[tuple[str, str]]) -> dict[str, dict[str, int]]:
    """Task -> state -> how many of its elements are in it, from ``(name, state)`` rows (tasks ignored)."""
    found: dict[str, dict[str, int]] = {}
    for name, state in rows:
        task, index = split(name)
        if index is not None:
            states = found.setdefault(task, {})
            states[state] = states.get(state, 0) + 1
    return found


@dataclass
class TaskSummary:
    """One task of a run: its own *state*, and for a map its *elements* and their *counts* by state
    (a plain task counts itself: ``{state: 1}``)."""

    task: str
    state: str
    elements: int | None = None  # None: not a map (or a map not started yet)
    counts: dict[str, int] = field(default_factory=dict)
    unrecorded: int = 0  # elements counted pending or skipped that have no record yet (or never will)

    def recorded(self, state: str | None = None) -> int:
        """How many element records there are (in *state*, if given): what a drill-down pages through."""
        rest = "skipped" if self.state in SETTLED else "pending"
        if state is None:
            return self.total - self.unrecorded
        return self.counts.get(state, 0) - (self.unrecorded if state == rest else 0)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def settled(self) -> int:
        return sum(n for state, n in self.counts.items() if state in SETTLED)

    def as_dict(self) -> dict:
        return {"task": self.task, "state": self.state, "elements": self.elements, **{s: self.counts.get(s, 0) for s in STATES}}

    def text(self) -> str:
        """``clean  running  4512/10000 (done 4500, running 8, failed 4)``; a plain task: ``numbers  done``."""
        if self.elements is None:
            return f"{self.task}  {self.state}"
        detail = ", ".join(f"{s} {self.counts[s]}" for s in STATES if self.counts.get(s))
        return f"{self.task}  {self.state}  {self.settled}/{self.total} ({detail or 'no elements'})"


def summarize(tasks: Iterable[str], states: Mapping[str, str], totals: Mapping[str, int | None],
              element_counts: Mapping[str, Mapping[str, int]]) -> list[TaskSummary]:  # fmt: skip
    """One :class:`TaskSummary` per task, in the order of *tasks*.

    *states*: each task's own state; *totals*: a map's number of elements (as its group announced
    it, None if not yet); *element_counts*: its recorded elements by state. Elements a map has but
    that are not recorded are ``pending`` while it runs, ``skipped`` once it settled.
    """
    rows = []
    for task in tasks:
        state = states.get(task, "pending")
        recorded = dict(element_counts.get(task) or {})
        total = totals.get(task)
        if total is None and not recorded:
            rows.append(TaskSummary(task, state, None, {state: 1}))
            continue
        missing = max((total or 0) - sum(recorded.values()), 0)
        if missing:
            rest = "skipped" if state in SETTLED else "pending"
            recorded[rest] = recorded.get(rest, 0) + missing
        rows.append(TaskSummary(task, state, sum(recorded.values()), recorded, missing))
    return rows


def from_rows(rows: list[dict], order: Iterable[str] | None = None) -> list[TaskSummary]:
    """The summary of a run's task rows at hand (``name``, ``state``, ``elements``), grouped here."""
    plain = [r for r in rows if split(r["name"])[1] is None]
    tasks = list(order) if order is not None else [r["name"] for r in plain]
    counts = count_elements((r["name"], r["state"]) for r in rows)
    return summarize(tasks, {r["name"]: r["state"] for r in plain}, {r["name"]: r.get("elements") for r in plain}, counts)


def read(store, run_id: str, tasks: list[str] | None = None, states: Mapping[str, str] | None = None) -> list[TaskSummary]:
    """The summary from a :class:`~toppipe.records.RecordStore`: the run's task rows (a few) and its
    elements counted by one ``GROUP BY``. *tasks* (their order) and *states* (live ones) default to
    the recorded ones."""
    plain = run_order(store.tasks(run_id, elements=False))
    recorded = {t["name"]: t["state"] for t in plain}
    return summarize(list(recorded) if tasks is None else tasks, recorded if states is None else states,
                     {t["name"]: t.get("elements") for t in plain}, store.element_counts(run_id))  # fmt: skip


class RunSummary:
    """A run's :class:`TaskSummary` rows: ``for row in summary``, ``summary["clean"]``, a text table
    (``print(summary)``) and an HTML one in Jupyter."""

    def __init__(self, run_id: str, pipeline: str, rows: list[TaskSummary]):
        self.run_id, self.pipeline, self.rows = run_id, pipeline, rows

    def __iter__(self):
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, task: str) -> TaskSummary:
        for row in self.rows:
            if row.task == task:
                return row
        raise KeyError(f"run {self.run_id} has no task {task!r}")

    @property
    def states(self) -> dict[str, str]:
        """Each task's own state (what ``run.status()`` returns)."""
        return {row.task: row.state for row in self.rows}

    def counts(self) -> dict[str, int]:
        """Every task and element counted by state (a map counts its elements, not itself)."""
        found: dict[str, int] = {}
        for row in self.rows:
            for state, n in row.counts.items():
                found[state] = found.get(state, 0) + n
        return found

    def __str__(self) -> str:
        width = max((len(row.task) for row in self.rows), default=0)
        lines = [f"run {self.run_id} of {self.pipeline}"]
        for row in self.rows:
            name, _, rest = row.text().partition("  ")
            lines.append(f"  {name:<{width}}  {rest}")
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return html_table(self)


def bar(counts: Mapping[str, int], height: int = 10) -> str:
    """An HTML bar of *counts*, a segment per state."""
    total = max(sum(counts.values()), 1)
    segments = "".join(f'<div style="width:{100 * counts[s] / total:.2f}%;background:{COLOURS[s]}" title="{s} {counts[s]}"></div>'
                       for s in STATES if counts.get(s))  # fmt: skip
    return f'<div style="display:flex;height:{height}px;width:16em;border:1px solid #999">{segments}</div>'


def html_table(summary: RunSummary) -> str:
    """The summary as an HTML table: task, state, a bar and the counts of each task."""
    rows = "".join(
        f"<tr><td><b>{html.escape(row.task)}</b></td><td>{html.escape(row.state)}</td><td>{bar(row.counts)}</td>"
        f"<td>{html.escape(row.text().split('  ', 2)[2] if row.elements is not None else '')}</td></tr>"
        for row in summary
    )
    return (f"<div><b>run {html.escape(summary.run_id)}</b> of {html.escape(summary.pipeline)}"
            f"<table>{rows}</table></div>")  # fmt: skip
