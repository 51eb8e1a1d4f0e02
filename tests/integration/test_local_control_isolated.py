"""Runs test_local_control.py in a pytest process of its own (see the reason there)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration


def test_the_servers_and_logs_from_python_in_a_process_of_their_own():
    module = Path(__file__).with_name("test_local_control.py")
    env = {**os.environ, "TOPPIPE_CONTROL_TESTS": "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(module)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)  # fmt: skip
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout.splitlines()[-1], done.stdout[-2000:]
