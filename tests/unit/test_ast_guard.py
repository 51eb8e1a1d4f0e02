"""tests.ast_guard: a garbage collection inside ``ast.parse`` whose finalizer parses too.

On CPython 3.11 that fails with "AST constructor recursion depth mismatch" (gh-106905); it
killed a CI run's failure report. The guard (installed by tests/conftest.py) holds the
collector off while a conversion runs.
"""

from __future__ import annotations

import ast
import gc
import sys

import pytest

SOURCE = "\n".join(f"def f{i}(a, b):\n    return [a + b * {i} for _ in range(3)]" for i in range(2000))


_parsing = [False]  # while True, each finalized object leaves another behind


class _ParsesWhenCollected:
    def __del__(self):
        ast.parse("x = [1, 2, (3, 4)]")
        if _parsing[0]:
            _garbage()


def _garbage() -> None:
    """An object in a reference cycle: only the collector frees it (and runs its finalizer)."""
    found = _ParsesWhenCollected()
    found.cycle = [found]


def _failures(parse) -> int:
    threshold = gc.get_threshold()
    gc.set_threshold(50)  # a collection every few hundred objects: several inside one parse
    _parsing[0] = True
    try:
        _garbage()
        failures = 0
        for _ in range(3):
            try:
                parse(SOURCE)
            except SystemError:
                failures += 1
        return failures
    finally:
        _parsing[0] = False
        gc.set_threshold(*threshold)
        gc.collect()


def test_a_collection_inside_a_parse_no_longer_breaks_it():
    assert _failures(ast.parse) == 0


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="the bug of CPython 3.11 that the guard is for")
def test_without_the_guard_it_breaks():
    """The same, unguarded: what the guard is for still happens on this Python."""
    assert _failures(ast.parse.__wrapped__) > 0
