"""Task results by what they were computed from.

A task's *key* (made on the client: its code, the project modules it uses,
its params) says what is known before it runs. What it reads is known only
once it ran, so a result is kept under its *result key*: the key, the result
keys of its inputs and the digest of every file it read. A key has one
*variant* per distinct set of those; a look-up takes the variant whose inputs
are the ones at hand and whose files still have their digests. A changed
file therefore recomputes the tasks that read it and what depends on them,
and putting it back finds the earlier result again. Layout, under the
results folder (the shared filesystem on sites that have one)::

    <result key[:2]>/<result key>.pkl              the value (cloudpickle)
    <key[:2]>/<key>.variants/<result key>.json     {"inputs": {...}, "reads": {...}}

Every file is written whole or not at all (a temporary file renamed); one that already
holds the same bytes is not written again.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Any, Callable


def result_key(key: str, inputs: dict[str, str], reads: dict[str, str]) -> str:
    text = json.dumps({"key": key, "inputs": inputs, "reads": reads}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def result_path(results: str, key: str) -> str:
    return os.path.join(results, key[:2], f"{key}.pkl")


def _variants(results: str, key: str) -> str:
    return os.path.join(results, key[:2], f"{key}.variants")


def load(results: str, key: str) -> Any:
    import cloudpickle

    with open(result_path(results, key), "rb") as handle:
        return cloudpickle.load(handle)


def lookup(results: str, key: str, inputs: dict[str, str], still_valid: Callable[[dict], bool]) -> tuple[str, Any] | None:
    """(result key, value) of a variant of *key* made from *inputs* whose reads are *still_valid*."""
    folder = _variants(results, key)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return None
    entries = []
    for name in names:
        if name.endswith(".json") and not name.startswith("."):
            path = os.path.join(folder, name)
            try:
                entries.append((os.stat(path).st_mtime_ns, name[:-5], path))
            except FileNotFoundError:
                continue
    for _, found, path in sorted(entries, reverse=True):  # the newest first
        try:
            with open(path) as handle:
                variant = json.load(handle)
        except (OSError, ValueError):
            continue
        if variant.get("inputs") == inputs and still_valid(variant.get("reads", {})):
            try:
                return found, load(results, found)
            except FileNotFoundError:
                continue
    return None


def store(results: str, key: str, inputs: dict[str, str], reads: dict[str, str], value: Any) -> str:
    """Keep *value* under its result key (the value first, then the variant that points at it).

    A file that already holds the same bytes is left as it is (a forced run of unchanged code):
    making and replacing a file costs a trivial task's time several times over on some disks."""
    import cloudpickle

    found = result_key(key, inputs, reads)
    path = result_path(results, found)
    kept = _size(path)
    if kept is not None and kept <= SAME_BYTES_LIMIT:  # (a big value is written as it is pickled, never held twice)
        pickled = cloudpickle.dumps(value)
        if len(pickled) != kept or not _holds(path, pickled):
            _write(path, lambda out: out.write(pickled))
    else:
        _write(path, lambda out: cloudpickle.dump(value, out))
    variant = json.dumps({"inputs": inputs, "reads": reads}, sort_keys=True).encode()
    folder = _variants(results, key)
    target = os.path.join(folder, f"{found}.json")
    if _size(target) == len(variant) and _holds(target, variant):
        return found
    os.makedirs(folder, exist_ok=True)  # (most keys are new: their folder too)
    _write(target, lambda out: out.write(variant))
    return found


#: The largest kept value compared with a new one before it is written again.
SAME_BYTES_LIMIT = 1 << 20


def _size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def _holds(path: str, data: bytes) -> bool:
    """Whether the file *path* holds exactly *data*."""
    try:
        with open(path, "rb") as handle:
            return handle.read(len(data) + 1) == data
    except OSError:
        return False


def _write(path: str, fill: Callable) -> None:
    folder = os.path.dirname(path)
    try:
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    except FileNotFoundError:  # the folder's first file (no makedirs before the others: syscalls each)
        os.makedirs(folder, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    try:
        with os.fdopen(handle, "wb") as out:
            fill(out)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
