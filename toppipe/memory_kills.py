"""A task dask gave up on because the workers running it died: when their nannies ended them
for using too much memory, say so (the limit, what it used, the host) instead of KilledWorker's text.

A nanny that ends its worker for memory logs the event ``worker-restart-memory``
(worker address, pid, rss) on the scheduler; the KilledWorker that reaches the
client names the last worker that ran the task, with its memory limit and host.
"""

from __future__ import annotations

from collections.abc import Iterable

from dask.utils import format_bytes

TOPIC = "worker-restart-memory"


def explain(task: str, error: BaseException, events: Iterable[tuple[float, dict]], hosts: dict[str, str]) -> str | None:
    """One line for *task* killed by *error* when its last worker was ended for memory, else None.

    *events* are the scheduler's ``worker-restart-memory`` events; *hosts* maps an
    address to the inventory's host name.
    """
    if type(error).__name__ != "KilledWorker":
        return None
    worker = error.last_worker
    ended = {event.get("worker"): event for _, event in events if isinstance(event, dict)}
    kill = ended.get(worker.address)
    if kill is None:
        return None
    host = hosts.get(worker.host, worker.host)
    return (
        f"task {task} needs more memory than a worker has: worker {worker.name} on {host} was ended at "
        f"{format_bytes(kill['rss'])} of its {format_bytes(worker.memory_limit)} limit, and so was each worker "
        f"that ran it before ({error.allowed_failures + 1} in all); give the workers more memory "
        "(toppipe.workers.memory in the inventory) or the task less data"
    )
