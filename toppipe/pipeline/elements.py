"""A map's results, fetched when asked for: :class:`MapResults`, what ``run.result(task)`` returns
for a mapped task.

The elements stay where they are: in the memory of a worker (the map's result, held by the run)
or in the result cache (read by a worker: on a real site the client cannot see the shared
filesystem). ``len()`` transfers none, ``r[i]`` and ``r[a:b]`` transfer those elements, and
iterating transfers a batch at a time. The functions below the class run on a worker and return
at most :data:`FETCH_BYTES` per call (by ``dask.sizeof``), one element at least.
"""

from __future__ import annotations

import operator
import reprlib
from collections.abc import Sequence
from typing import Any, Callable

from toppipe.pipeline import cache
from toppipe.pipeline.graph import PipelineError

#: Elements asked for in one fetch (iteration, slices).
BATCH = 1000
#: Bytes one fetch returns at most (a bigger element comes alone).
FETCH_BYTES = 64 * 2**20
#: Elements a repr shows.
PREVIEW = 3

Fetch = Callable[[range], list]


class MapResults(Sequence):
    """The results of a mapped task, in the order of its input (failed elements left out).

    ``len(r)`` is known without fetching; ``r[i]``, ``r[-1]`` and ``r[a:b:c]`` (a list) fetch only
    those elements; ``for x in r`` fetches :data:`BATCH` elements (at most :data:`FETCH_BYTES`) at
    a time; ``list(r)`` fetches them all. Nothing is kept here: indexing twice fetches twice.
    ``fetched`` counts the elements transferred so far.
    """

    def __init__(self, task: str, length: int, fetch: Fetch, preview: Callable[[int], list[str]] | None = None,
                 batch: int = BATCH):  # fmt: skip
        """*fetch(indexes)* returns the values of a prefix of *indexes* (at least one, or all of
        them); *preview(n)* the shortened reprs of the first *n* elements."""
        self.task, self._length, self._fetch, self._preview, self._batch = task, length, fetch, preview, batch
        self.fetched = 0

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self._values(range(*index.indices(self._length)))
        try:
            position = operator.index(index)
        except TypeError:
            kind = type(index).__name__
            raise TypeError(f"results of {self.task} are indexed by integers or slices, not {kind}") from None
        if position < 0:
            position += self._length
        if not 0 <= position < self._length:
            raise IndexError(f"index {index} is out of range: {self.task} has {self._length} results")
        return self._values(range(position, position + 1))[0]

    def __iter__(self):
        for chunk in self._chunks(range(self._length)):
            yield from chunk

    def __reversed__(self):
        for chunk in self._chunks(range(self._length - 1, -1, -1)):
            yield from chunk

    def index(self, value: Any, start: int = 0, stop: int | None = None) -> int:
        """The first position of *value* (fetching batch by batch until found)."""
        indexes = range(self._length)[start:stop]
        position = 0
        for chunk in self._chunks(indexes):
            for found in chunk:
                if found is value or found == value:
                    return indexes[position]
                position += 1
        raise ValueError(f"{value!r} is not in the results of {self.task}")

    def __eq__(self, other) -> bool:
        if not isinstance(other, (list, tuple, MapResults)):
            return NotImplemented
        return len(other) == self._length and all(a == b for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment] - compared by content, like a list

    def __repr__(self) -> str:
        shown = ""
        if self._preview is not None and self._length:
            try:
                first = self._preview(min(PREVIEW, self._length))
            except Exception:  # noqa: BLE001 - a repr shows what it can
                first = None
            if first is not None:
                shown = " [" + ", ".join(first) + (", ...]" if self._length > len(first) else "]")
        return f"<MapResults of {self.task}: {self._length} element{'s' * (self._length != 1)}{shown}>"

    def _values(self, indexes: range) -> list:
        found: list = []
        for chunk in self._chunks(indexes):
            found.extend(chunk)
        return found

    def _chunks(self, indexes: range):
        """The values of *indexes*, a fetch at a time."""
        done = 0
        while done < len(indexes):
            asked = indexes[done : done + self._batch]
            chunk = self._fetch(asked)[: len(asked)]
            if not chunk:
                raise PipelineError(f"results of {self.task}: fetching elements {asked.start}... returned nothing")
            done += len(chunk)
            self.fetched += len(chunk)
            yield chunk


# -- on a worker ------------------------------------------------------------

_short = reprlib.Repr()
_short.maxstring = _short.maxother = 60
_short.maxlist = _short.maxtuple = _short.maxset = _short.maxdict = 4
_short.maxlevel = 2


def _bounded(values, limit: int) -> list:
    """*values* up to *limit* bytes (the one that crosses it included)."""
    from dask.sizeof import sizeof

    found, size = [], 0
    for value in values:
        found.append(value)
        size += sizeof(value)
        if size >= limit:
            break
    return found


def count_held(result) -> int:
    """How many elements a map's collected result (a TaskResult, in this worker's memory) has."""
    return len(result.value)


def take_held(result, indexes: range, limit: int = FETCH_BYTES) -> list:
    """The values at *indexes* of a map's collected result, up to *limit* bytes."""
    return _bounded((result.value[i] for i in indexes), limit)


def preview_held(result, count: int) -> list[str]:
    """The shortened reprs of the first *count* elements."""
    return [_short.repr(value) for value in result.value[:count]]


def take_cached(results: str, keys: list[str], limit: int = FETCH_BYTES) -> list:
    """The elements kept in the cache under these result keys, up to *limit* bytes."""
    return _bounded((_load(results, key) for key in keys), limit)


def preview_cached(results: str, keys: list[str]) -> list[str]:
    return [_short.repr(_load(results, key)) for key in keys]


def _load(results: str, key: str | None):
    try:
        return cache.load(results, key or "")
    except FileNotFoundError:
        raise PipelineError(f"the result {key} is not in the cache (it was not kept: a file it read changed while"
                            " it ran); run the pipeline again") from None  # fmt: skip
