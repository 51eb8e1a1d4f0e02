"""Stopping a service's processes (real processes, real bash): SIGTERM, a bounded grace, SIGKILL,
and an ended process counts as gone before its reaper collects it."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

from deploy.runtime.shell import kill_marked


def _marked(argv: list[str], marker: str) -> subprocess.Popen:
    """*argv* started (exec'd: Popen returns after) with the service marker, and not reaped until the
    test waits for it (a zombie meanwhile)."""
    return subprocess.Popen(argv, env={**os.environ, "TOPPIPE_SERVICE": marker})


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().rsplit(") ", 1)[1][0]


def test_a_process_that_ended_is_not_waited_for_while_it_is_a_zombie():
    marker = f"grace-{uuid.uuid4().hex[:8]}/svc"
    child = _marked(["sleep", "100"], marker)
    try:
        # with a 60 s grace, waiting for the reaper (this test, which does not reap yet) would pass the timeout
        subprocess.run(["bash", "-c", "set -u\n" + kill_marked(marker, fixed=True, grace=60)], check=True, timeout=30)
        assert _state(child.pid) == "Z"
    finally:
        child.kill()
        child.wait()


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace():
    marker = f"grace-{uuid.uuid4().hex[:8]}/svc"
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(100)"
    child = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "TOPPIPE_SERVICE": marker}, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        subprocess.run(["bash", "-c", "set -u\n" + kill_marked(marker, fixed=True, grace=0.5)], check=True, timeout=30)
        assert child.wait(timeout=30) == -9  # SIGKILL: it never ended on SIGTERM
    finally:
        child.kill()
        child.wait()
