"""Shared helpers: run the deploy CLI as a user would, in a private state folder."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytest_plugins = ["tests.tier_times"]


@dataclass(frozen=True)
class Completed:
    code: int
    stdout: str
    stderr: str


def run_deploy(*args: str, state_dir: Path, timeout: float = 300, cwd: Path = REPO) -> Completed:
    """``python -m deploy ARGS`` as a subprocess with TOPPIPE_STATE_DIR=*state_dir*."""
    env = {**os.environ, "TOPPIPE_STATE_DIR": str(state_dir)}
    env.pop("TOPPIPE_SERVICE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "deploy", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    return Completed(proc.returncode, proc.stdout, proc.stderr)


@contextmanager
def deployed(inventory: str, state_dir: Path):
    """The site of *inventory* up with its state in *state_dir* while inside; ``down --purge`` after."""
    up = run_deploy("up", inventory, state_dir=state_dir)
    assert up.code == 0, up.stdout + up.stderr
    try:
        yield state_dir
    finally:
        run_deploy("down", inventory, "--purge", state_dir=state_dir)


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
