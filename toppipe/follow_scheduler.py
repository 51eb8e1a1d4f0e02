"""A host worker of an agent in an allocation: started again whenever its scheduler goes away,
and not when its scheduler retired it.

The agent's successor may run on another node, and dask workers do not reconnect: a worker
that lost its scheduler exits, and starts again with the address the scheduler file names
then. A worker the scheduler retired (``session.scale`` down) also exits, with the same code;
it is told apart by its scheduler being the same one, still answering, so its service ends as
it does on a site whose agent runs on the login node.

    python -m toppipe.follow_scheduler SCHEDULER_FILE WORKER_COMMAND...
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit

#: Seconds between a worker's exit and its next start.
PAUSE_SECONDS = 2
#: How long the scheduler has to accept a connection to count as answering.
ANSWER_SECONDS = 3
#: How often the scheduler file is looked at while a worker waits for it.
FILE_POLL_SECONDS = 0.5


def scheduler_in(path: str) -> tuple[str, str] | None:
    """The (id, address) the scheduler file names, None while there is none (or half written)."""
    try:
        with open(path) as file:
            found = json.load(file)
        return str(found["id"]), str(found["address"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def answers(address: str, timeout: float = ANSWER_SECONDS) -> bool:
    """Whether something accepts connections at the scheduler's *address* (``tls://host:port``)."""
    parts = urlsplit(address)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=timeout):
            return True
    except (OSError, ValueError, TypeError):
        return False


def retired(before: tuple[str, str] | None, after: tuple[str, str] | None) -> bool:
    """Whether a worker that exited was retired: its scheduler (*before* it started) is the one
    the file names now (*after*), and still answers."""
    return before is not None and before == after and answers(after[1])


def run_worker(path: str, command: list[str]) -> tuple[int, tuple[str, str] | None]:
    """Run the worker until it exits: its exit code, and the scheduler it joined. That is the one
    the file names when it starts or, if there is no file yet (the agent's job is starting), the
    first one the file names: dask's worker waits for the file and reads it as it appears."""
    joined = scheduler_in(path)
    worker = subprocess.Popen(command)
    while joined is None:
        try:
            return worker.wait(timeout=FILE_POLL_SECONDS), None
        except subprocess.TimeoutExpired:
            joined = scheduler_in(path)
    return worker.wait(), joined


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m toppipe.follow_scheduler SCHEDULER_FILE WORKER_COMMAND...", file=sys.stderr)
        return 2
    path, command = argv[0], argv[1:]
    while True:
        code, joined = run_worker(path, command)
        if retired(joined, scheduler_in(path)):
            return code
        time.sleep(PAUSE_SECONDS)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
