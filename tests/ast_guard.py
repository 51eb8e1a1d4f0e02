"""One thread at a time through the conversions between C and Python ASTs, in the test process.

CPython 3.11 keeps the AST builder's recursion depth per interpreter, not per thread
(gh-106905): two threads in ``ast.parse`` (or ``compile`` of an AST) at once fail with
"AST constructor recursion depth mismatch". pytest parses in the main thread (assertion
rewriting of a module imported late, the source of a failure's traceback) while the threads
of sessions, runs and clients may import or parse too; twice in CI a failure's report died
of it (INTERNALERROR). This serializes ``ast.parse`` (``ast.literal_eval`` goes through it)
and the rewriter's ``compile``.
"""

from __future__ import annotations

import ast
import functools
import threading

import _pytest.assertion.rewrite

_CONVERTING = threading.RLock()


def _one_at_a_time(function):
    @functools.wraps(function)
    def call(*args, **kwargs):
        with _CONVERTING:
            return function(*args, **kwargs)

    return call


ast.parse = _one_at_a_time(ast.parse)
_pytest.assertion.rewrite.compile = _one_at_a_time(compile)  # its module-level name shadows the builtin
