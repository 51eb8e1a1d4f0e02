"""Graph algorithms over ``name -> names it waits for``, in insertion order; no errors raised here."""

from __future__ import annotations

import heapq
from typing import Callable, Iterable, Mapping, Sequence


def topological(upstream: Mapping[str, Sequence[str]]) -> list[str]:
    """Kahn's algorithm, always taking the earliest-inserted ready name; a cycle's names are left out."""
    names = list(upstream)
    index = {name: position for position, name in enumerate(names)}
    waiting = {name: len(set(waits)) for name, waits in upstream.items()}
    dependents: dict[str, list[str]] = {name: [] for name in names}
    for name, waits in upstream.items():
        for waited in set(waits):
            dependents[waited].append(name)
    ready = [index[name] for name, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        name = names[heapq.heappop(ready)]
        order.append(name)
        for dependent in dependents[name]:
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                heapq.heappush(ready, index[dependent])
    return order


def cycle(upstream: Mapping[str, Sequence[str]], stuck: Sequence[str]) -> list[str]:
    """A cycle among *stuck* names (those :func:`topological` left out), in run direction and closed.

    It starts from its earliest-inserted name: ``["a", "b", "a"]`` when b waits for a and a for b.
    """
    path = [stuck[0]]
    while True:
        waited = next(name for name in upstream[path[-1]] if name in stuck)
        if waited in path:
            loop = path[path.index(waited):][::-1]  # walked upstream; reversed, each name feeds the next
            first = min(range(len(loop)), key=lambda i: stuck.index(loop[i]))
            loop = loop[first:] + loop[:first]
            return loop + [loop[0]]
        path.append(waited)


def reach(start: str, neighbours: Callable[[str], Iterable[str]]) -> set[str]:
    """Every name reachable from *start* through *neighbours*, *start* excluded unless on a cycle."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for other in neighbours(todo.pop()):
            if other not in seen:
                seen.add(other)
                todo.append(other)
    return seen
