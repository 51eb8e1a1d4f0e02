"""toppipe.quick_exit: a process left without the interpreter's teardown still runs its exit
handlers, flushes its output and exits with main's code (real subprocesses)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROGRAM = """
import atexit, logging, sys
from toppipe import quick_exit

def main():
    atexit.register(lambda: open(sys.argv[1], "w").write("handler ran"))
    logging.basicConfig(filename=sys.argv[1] + ".log", level=logging.INFO)
    logging.info("logged")
    sys.stdout.write("unflushed output")
    return {result}

quick_exit.run(main)
"""


@pytest.mark.parametrize(("result", "code", "stderr"), [("3", 3, ""), ("None", 0, ""), ("sys.exit('bad setting')", 1, "bad setting")])
def test_exit_handlers_output_and_code_survive(tmp_path, result, code, stderr):
    marker = tmp_path / "marker"
    done = subprocess.run([sys.executable, "-c", PROGRAM.format(result=result), str(marker)], capture_output=True, text=True, timeout=60)
    assert done.returncode == code, done.stderr
    assert done.stdout == "unflushed output" and done.stderr.strip() == stderr
    assert marker.read_text() == "handler ran"
    assert "logged" in (tmp_path / "marker.log").read_text()


def test_a_crash_keeps_its_traceback_and_code_1(tmp_path):
    program = "from toppipe import quick_exit\ndef main():\n    raise RuntimeError('boom')\nquick_exit.run(main)\n"
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "RuntimeError: boom" in done.stderr and "Traceback" in done.stderr
