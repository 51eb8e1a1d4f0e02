"""Shared helpers: run the deploy CLI as a user would, in a private state folder."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

import tests.ast_guard  # noqa: F401  (before any thread starts)

REPO = Path(__file__).resolve().parent.parent
pytest_plugins = ["tests.tier_times"]


@dataclass(frozen=True)
class Completed:
    code: int
    stdout: str
    stderr: str


def until(condition, seconds: float, every: float = 0.05) -> bool:
    """Whether *condition()* held within *seconds* (asked every *every* seconds)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(every)
    return True


def run_deploy(*args: str, state_dir: Path, timeout: float = 300, cwd: Path = REPO) -> Completed:
    """``python -m deploy ARGS`` as a subprocess with TOPPIPE_STATE_DIR=*state_dir*."""
    env = {**os.environ, "TOPPIPE_STATE_DIR": str(state_dir)}
    env.pop("TOPPIPE_SERVICE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "deploy", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    return Completed(proc.returncode, proc.stdout, proc.stderr)


def start_deploy(*args: str, state_dir: Path, cwd: Path = REPO) -> subprocess.Popen:
    """``python -m deploy ARGS`` started as a subprocess (text pipes) with TOPPIPE_STATE_DIR=*state_dir*."""
    env = {**os.environ, "TOPPIPE_STATE_DIR": str(state_dir)}
    env.pop("TOPPIPE_SERVICE", None)
    return subprocess.Popen(
        [sys.executable, "-m", "deploy", *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@contextmanager
def deployed(inventory: str, state_dir: Path):
    """The site of *inventory* up with its state in *state_dir* while inside; ``down --purge`` after."""
    up = run_deploy("up", inventory, state_dir=state_dir)
    assert up.code == 0, up.stdout + up.stderr
    try:
        yield state_dir
    finally:
        run_deploy("down", inventory, "--purge", state_dir=state_dir)


def line_queue(stream) -> queue.Queue:
    """The lines of *stream* (a subprocess's pipe), put in a queue by a reader thread as they come;
    ``get(timeout=...)`` waits for the next with a deadline. None once the stream ends."""
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        for line in stream:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


def marked_pids(site: str) -> list[int]:
    """Pids of every process on this machine that belongs to *site*."""
    found = []
    needle = f"TOPPIPE_SERVICE={site}/".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if any(item.startswith(needle) for item in environ.split(b"\0")):
            found.append(int(entry.name))
    return found


@pytest.fixture
def repo() -> Path:
    return REPO
