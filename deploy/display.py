"""Terminal output of the deploy commands: progress lines, summaries, tables."""

from __future__ import annotations

import sys
import time

from deploy.engine import ActionResult, Outcome, RunReport
from deploy.runtime import ServiceState

_MARKS = {Outcome.CHANGED: "changed", Outcome.UNCHANGED: "ok", Outcome.FAILED: "FAILED", Outcome.SKIPPED: "skipped", Outcome.REFUSED: "REFUSED"}


def changes_made(report: RunReport) -> str:
    """``no changes`` or ``N change(s)``: what a run changed, as up and plan say it."""
    changes = len(report.changed)
    return "no changes" if changes == 0 else f"{changes} change{'s' * (changes != 1)}"


def out(line: str = "") -> None:
    print(line, flush=True)


class ProgressPrinter:
    """Prints one line per finished action (to *write*: stdout, or a notebook's view); unchanged ones only when verbose."""

    def __init__(self, verbose: bool = False, write=None):
        self.verbose, self.write = verbose, write or out
        self.started = time.monotonic()
        self.count = 0

    def __call__(self, result: ActionResult) -> None:
        self.count += 1
        if result.outcome is Outcome.UNCHANGED and not self.verbose:
            return
        action = result.action
        line = f"  [{time.monotonic() - self.started:5.1f}s] {action.host:<12} {action.role:<10} {action.resource.describe():<48} {_MARKS[result.outcome]}"
        self.write(line)
        if result.outcome in (Outcome.FAILED, Outcome.REFUSED) and result.message:
            self.write(f"      {result.message}")


def summary(report: RunReport, seconds: float) -> None:
    rows = report.per_host()
    out()
    out(f"{'host':<14}{'changed':>9}{'unchanged':>11}{'failed':>8}{'skipped':>9}")
    for host in sorted(rows):
        row = rows[host]
        out(f"{host:<14}{row[Outcome.CHANGED]:>9}{row[Outcome.UNCHANGED]:>11}{row[Outcome.FAILED] + row[Outcome.REFUSED]:>8}{row[Outcome.SKIPPED]:>9}")
    for host, why in sorted(report.unreachable.items()):
        out(f"{host:<14}  unreachable: {why}")
    for result in report.failed:
        action = result.action
        out(f"failed: {action.host} {action.role}: {action.resource.describe()}: {result.message}")
    for result in report.refused:  # one line per service whose new definition was refused
        out(f"refused: {result.action.host} {result.action.resource.spec.name}: {result.message}")
    if report.ok:
        out(f"{changes_made(report)}, {len(report.results)} actions checked in {seconds:.1f} s")
        return
    problems = [f"{len(report.unreachable)} host(s) unreachable ({', '.join(sorted(report.unreachable))})"] if report.unreachable else []
    if report.failed:
        problems.append(f"{len(report.failed)} action(s) failed")
    if report.refused:
        problems.append(f"{len(report.refused)} service change(s) refused, the previous definition still running")
    out(f"NOT converged: {'; '.join(problems)}; {changes_made(report)} elsewhere, in {seconds:.1f} s")


def plan_table(report: RunReport) -> None:
    todo = report.changed
    for result in todo:
        action = result.action
        out(f"  {action.host:<12} {action.role:<10} {action.resource.describe()}")
    for result in report.failed:  # a check (an Ansible task in check mode) that fails already
        action = result.action
        out(f"  {action.host:<12} {action.role:<10} {action.resource.describe()}  FAILS: {result.message}")
    for host, why in sorted(report.unreachable.items()):
        out(f"  {host:<12} unreachable: {why}")
    out(f"up would make {len(todo)} change{'s' * (len(todo) != 1)} ({len(report.results) - len(todo)} already in place)")
    if report.unreachable:
        out(f"not assessed: {', '.join(sorted(report.unreachable))} (unreachable); plan is incomplete")


def status_table(states: dict[tuple[str, str], ServiceState], unreachable: dict[str, str]) -> None:
    now = time.time()
    out(f"{'host':<12} {'service':<12} {'state':<10} {'pid':>8} {'up for':>9}  ports")
    for host, why in sorted(unreachable.items()):
        out(f"{host:<12} {'-':<12} {'unknown':<10} {'-':>8} {'-':>9}  {why}")
    for (host, name), state in sorted(states.items()):
        uptime = _duration(now - state.started) if state.running and state.started else "-"
        ports = " ".join(f"{hp}({'open' if up else 'closed'})" for hp, up in state.ports) or "-"
        label = "running" if state.answering else ("starting" if state.running else "stopped")
        out(f"{host:<12} {name:<12} {label:<10} {state.pid or '-':>8} {uptime:>9}  {ports}")


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
