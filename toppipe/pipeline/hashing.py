"""Digests of a task's code and of its parameter values, for caching and provenance.

Both are 16 hex characters of sha256 and do not depend on the process: no
``id()``, no memory addresses, no ``hash()`` of strings (which is salted per
process).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import pickle
import textwrap
import types
import weakref
from typing import Any, Callable

from toppipe.pipeline.graph import PipelineError

#: The pickle protocol behind :func:`value_hash`; fixed so a newer default does not change digests.
PICKLE_PROTOCOL = 4

_REMEMBERED: weakref.WeakKeyDictionary[Callable, tuple[types.CodeType, str]] = weakref.WeakKeyDictionary()


def code_hash(func: Callable) -> str:
    """The digest of *func*'s own code: its dedented source, or else its code object.

    The source (decorator lines included) is preferred: it is the same in every
    process and Python version, and it ignores the rest of the file, so editing
    another function does not change it. Functions without source (``exec``,
    a plain ``python -c``) fall back to :func:`code_object_digest`.

    Limits: helpers *func* calls and globals it reads are not part of the digest.
    The first digest of a function object is remembered, so a file edited after
    it was loaded does not change the digest of the code that is actually running
    (the loader computes it at load time).
    """
    code = getattr(func, "__code__", None)
    remembered = _REMEMBERED.get(func) if _weakrefable(func) else None
    if remembered is not None and remembered[0] is code:
        return remembered[1]
    try:
        text = "source\0" + textwrap.dedent(inspect.getsource(func))
    except (OSError, TypeError):
        if code is None:
            raise PipelineError(f"cannot hash the code of {func!r}: it is not a Python function") from None
        text = "code\0" + code_object_digest(code)
    digest = _digest(text.encode())
    if _weakrefable(func):
        _REMEMBERED[func] = (code, digest)
    return digest


def code_object_digest(code: types.CodeType) -> str:
    """A recursive digest of bytecode, constants (nested code included) and names.

    Line numbers are left out, so moving a function does not change it; bytecode
    differs between Python versions, so it is stable for one version only.
    """
    parts = [
        code.co_code.hex(),
        repr(code.co_names),
        repr(code.co_varnames),
        repr(code.co_freevars),
        repr((code.co_argcount, code.co_kwonlyargcount, code.co_flags)),
        *(_constant(value) for value in code.co_consts),
    ]
    return _digest("\0".join(parts).encode())


def value_hash(value: Any) -> str:
    """The digest of a parameter value: canonical JSON when it is plain data, else its pickle.

    Plain data is ``None``, bool, int, float, str and lists, tuples and str-keyed
    dicts of those; key order does not matter, and a tuple hashes like a list.
    Anything else hashes by its pickle (protocol :data:`PICKLE_PROTOCOL`): equal
    pickles mean equal values, but equal values may pickle differently (sets of
    strings between processes, objects across library versions), which costs a
    cache miss, never a wrong hit. A value that cannot be pickled is a PipelineError.
    """
    if _plain(value):
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)
        return _digest(b"json\0" + text.encode())
    try:
        data = pickle.dumps(value, protocol=PICKLE_PROTOCOL)
    except Exception as error:
        raise PipelineError(
            f"cannot hash a parameter value of type {type(value).__name__}: {error}; use plain data instead"
        ) from None
    return _digest(b"pickle\0" + data)


def _constant(value: Any) -> str:
    if isinstance(value, types.CodeType):
        return "code(" + code_object_digest(value) + ")"
    if isinstance(value, tuple):
        return "tuple(" + ",".join(_constant(item) for item in value) + ")"
    if isinstance(value, frozenset):
        return "frozenset(" + ",".join(sorted(_constant(item) for item in value)) + ")"
    return f"{type(value).__name__}:{value!r}"


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return type(value) in (type(None), bool, int, float, str)  # not subclasses such as IntEnum
    if type(value) in (list, tuple):
        return all(_plain(item) for item in value)
    if type(value) is dict:
        return all(type(key) is str and _plain(item) for key, item in value.items())
    return False


def _weakrefable(func: Callable) -> bool:
    return isinstance(func, types.FunctionType)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]
