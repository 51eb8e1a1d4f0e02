"""A host worker of an agent in an allocation starts again when its scheduler changed or went
away, and ends when the same scheduler, still answering, retired it (real sockets and processes)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from toppipe import follow_scheduler


@pytest.fixture
def listening():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield f"tls://127.0.0.1:{server.getsockname()[1]}"


def closed_address() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"tls://127.0.0.1:{probe.getsockname()[1]}"


def write(path, scheduler_id: str, address: str) -> None:
    path.write_text(json.dumps({"type": "Scheduler", "id": scheduler_id, "address": address}))


def test_the_scheduler_file_is_read_only_when_whole(tmp_path, listening):
    path = tmp_path / "scheduler.json"
    assert follow_scheduler.scheduler_in(str(path)) is None
    path.write_text('{"id": "Scheduler-1", "addr')
    assert follow_scheduler.scheduler_in(str(path)) is None
    write(path, "Scheduler-1", listening)
    assert follow_scheduler.scheduler_in(str(path)) == ("Scheduler-1", listening)


def test_only_the_same_scheduler_still_answering_means_retired(listening):
    same = ("Scheduler-1", listening)
    assert follow_scheduler.retired(same, same)
    assert not follow_scheduler.retired(same, ("Scheduler-2", listening))  # a successor took over
    assert not follow_scheduler.retired(None, same)  # the file was not there when it started
    gone = ("Scheduler-1", closed_address())
    assert not follow_scheduler.retired(gone, gone)  # the agent died before a successor wrote the file


def test_a_worker_runs_again_after_its_scheduler_changed_and_ends_once_retired(tmp_path, listening, monkeypatch):
    monkeypatch.setattr(follow_scheduler, "PAUSE_SECONDS", 0)
    path, runs = tmp_path / "scheduler.json", tmp_path / "runs"
    write(path, "Scheduler-1", listening)
    # the "worker": its first run sees a successor take over, its second is retired by it
    worker = (f"import json, pathlib; runs = pathlib.Path({str(runs)!r}); runs.write_text(runs.read_text() + 'x' if runs.exists() else 'x');"
              f"len(runs.read_text()) == 1 and pathlib.Path({str(path)!r}).write_text(json.dumps({{'id': 'Scheduler-2', 'address': {listening!r}}}))")  # fmt: skip
    assert follow_scheduler.main([str(path), sys.executable, "-c", worker]) == 0
    assert runs.read_text() == "xx"


def test_without_a_command_it_says_how_it_is_used(capsys):
    assert follow_scheduler.main(["scheduler.json"]) == 2
    assert "usage: python -m toppipe.follow_scheduler" in capsys.readouterr().err


def test_a_worker_started_before_the_agent_wrote_its_file_joined_the_first_scheduler_it_names(tmp_path, listening, monkeypatch):
    monkeypatch.setattr(follow_scheduler, "FILE_POLL_SECONDS", 0.05)
    path = tmp_path / "scheduler.json"
    # the "worker" waits for the file, as dask's does; the agent's job writes it meanwhile
    worker = f"import pathlib, time\nwhile not pathlib.Path({str(path)!r}).exists(): time.sleep(0.01)\ntime.sleep(0.3)"
    agent = f"import json, pathlib, time; time.sleep(0.2); pathlib.Path({str(path)!r}).write_text(json.dumps({{'id': 'Scheduler-1', 'address': {listening!r}}}))"
    writer = subprocess.Popen([sys.executable, "-c", agent])
    try:
        code, joined = follow_scheduler.run_worker(str(path), [sys.executable, "-c", worker])
    finally:
        writer.wait()
    assert (code, joined) == (0, ("Scheduler-1", listening))
    assert follow_scheduler.retired(joined, follow_scheduler.scheduler_in(str(path)))  # then retired: its service ends
