"""Prints how long each tier of the suite took (unit, integration, lab), so CI shows where its time goes.

A tier's time is the sum of its tests' setup, call and teardown, which
includes the fixtures they start (a lab deployment is paid by its first test).
The slowest test modules follow, with the same sums per module.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

_TESTS = Path(__file__).resolve().parent
ORDER = ("unit", "integration", "lab")
SLOWEST_MODULES = 10
_seconds: dict[str, float] = defaultdict(float)
_tests: dict[str, int] = defaultdict(int)
_modules: dict[str, float] = defaultdict(float)
_started = time.monotonic()
#: Lines a tier adds under the times (the lab's wait for scripts/test's background preparation).
notes: list[str] = []


def tier_of(path: str) -> str:
    """The tier of a test file (relative to the repository, as reports name it, whatever the
    test's working folder): its folder under tests/ (unit, integration, lab)."""
    parts = Path(path).parts
    return parts[1] if len(parts) > 2 and parts[0] == _TESTS.name else "other"


def pytest_runtest_logreport(report):
    tier = tier_of(report.fspath)
    _seconds[tier] += report.duration
    _modules[report.fspath] += report.duration
    if report.when == "call" or (report.when == "setup" and report.skipped):
        _tests[tier] += 1


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:04.1f} s"


def pytest_terminal_summary(terminalreporter):
    if not _seconds:
        return
    terminalreporter.section("time per tier")
    for tier in sorted(_seconds, key=lambda t: ORDER.index(t) if t in ORDER else len(ORDER)):
        terminalreporter.write_line(f"{tier:<12} {_tests[tier]:>4} tests  {_minutes(_seconds[tier])}")
    terminalreporter.write_line(f"{'all':<12} {sum(_tests.values()):>4} tests  {_minutes(time.monotonic() - _started)} (wall)")
    for note in notes:
        terminalreporter.write_line(note)
    slowest = sorted(_modules.items(), key=lambda item: -item[1])[:SLOWEST_MODULES]
    terminalreporter.write_line("slowest modules: " + ", ".join(f"{Path(m).stem} {_minutes(s)}" for m, s in slowest))
