"""One AST conversion at a time in the test process, with no garbage collection inside it.

CPython 3.11 keeps the AST builder's recursion depth per interpreter, not per thread
(gh-106905). A conversion (``ast.parse``, or ``compile`` of an AST) that starts while another
is under way fails with "AST constructor recursion depth mismatch": two threads at once, or,
in one thread, a garbage collection inside a conversion whose finalizers (``__del__`` of a
client, a session...) convert too. pytest parses a failing test's source to report it while
the threads of sessions, runs and clients parse and collect garbage; in CI a failure's report
died of it (INTERNALERROR), and with it the rest of the run. This serializes the conversions
(``ast.parse``, which ``ast.literal_eval`` goes through, and the assertion rewriter's ``compile``)
and holds the garbage collector off while one runs. (``builtins.compile`` stays as it is: a
wrapper would hand its own ``__future__`` imports to every caller that inherits them.)
"""

from __future__ import annotations

import ast
import functools
import gc
import threading

import _pytest.assertion.rewrite

_CONVERTING = threading.RLock()


def _one_at_a_time(function):
    @functools.wraps(function)
    def call(*args, **kwargs):
        with _CONVERTING:
            collecting = gc.isenabled()
            gc.disable()
            try:
                return function(*args, **kwargs)
            finally:
                if collecting:
                    gc.enable()

    return call


ast.parse = _one_at_a_time(ast.parse)
_pytest.assertion.rewrite.compile = _one_at_a_time(compile)  # its module-level name shadows the builtin
