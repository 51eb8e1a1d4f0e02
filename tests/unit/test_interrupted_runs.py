"""Interrupted runs, in pure logic: the spool that keeps run records while the store is away
(against a store that fails on purpose), the store marking unfinished runs interrupted (real
SQLite), how a lost scheduler is told apart and said, and what resume() runs again."""

from __future__ import annotations

import logging
import os
import stat
import textwrap
import time
from types import SimpleNamespace

import pytest
from distributed.client import CancelledFuturesGroup, FutureCancelledError, FuturesCancelledError

from toppipe import interruptions, recorder as recorder_module
from toppipe.errors import RunInterruptedError, SchedulerLostError, ToppipeError
from toppipe.pipeline import load
from toppipe.pipeline.graph import PipelineError
from toppipe.pipeline.resume import changed_tasks, origin_from_records, placement_of, selection_for
from toppipe.pipeline.keys import cache_keys
from toppipe.records import AGENT_TOPIC, RecordStore, init
from toppipe.recorder import RunRecorder, well_formed
from toppipe.spool import Spool


def started(run: str, tasks=("a", "b", "c"), when: float = 1.0, pipeline: str = "p") -> tuple[str, dict]:
    return ("toppipe-run", {"run": run, "state": "started", "pipeline": pipeline, "tasks": list(tasks), "time": when})


def task(run: str, name: str, state: str, when: float) -> tuple[str, dict]:
    return ("toppipe-task", {"run": run, "task": name, "state": state, "time": when, "host": "h"})


def until(condition, timeout: float = 10, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"{what} not met within {timeout} s"
        time.sleep(0.02)
    return found


# -- the spool ---------------------------------------------------------------


def test_the_spool_gives_events_back_in_order_and_across_a_restart(tmp_path):
    spool = Spool(tmp_path / "spool")
    assert spool.empty
    events = [task("r", f"t{i}", "done", float(i)) for i in range(5)]
    assert spool.append(events[:3]) == 0 and spool.append(events[3:]) == 0
    first, offset = spool.read(2)
    assert first == events[:2]
    spool.acknowledge(offset)
    again = Spool(tmp_path / "spool")  # a new agent finds what the last one did not write
    rest, end = again.read(100)
    assert rest == events[2:]
    again.acknowledge(end)
    assert again.empty and again.size == 0 and (tmp_path / "spool" / "events.jsonl").stat().st_size == 0


def test_the_spool_is_private(tmp_path):
    spool = Spool(tmp_path / "spool")
    spool.append([task("r", "a", "done", 1.0)])
    spool.acknowledge(spool.read(0)[1])
    assert stat.S_IMODE(os.stat(tmp_path / "spool").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(spool.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "spool" / "offset").st_mode) == 0o600


def test_the_spool_drops_what_exceeds_its_bound_and_says_how_many(tmp_path):
    spool = Spool(tmp_path / "spool", max_bytes=300)
    events = [task("run-with-a-long-name", f"task{i}", "done", float(i)) for i in range(10)]
    dropped = spool.append(events)
    kept, _ = spool.read(100)
    assert 0 < dropped < 10 and kept == events[: 10 - dropped]
    assert spool.size <= 300


def test_a_line_cut_short_by_a_crash_is_dropped_not_joined_to_the_next(tmp_path):
    spool = Spool(tmp_path / "spool")
    spool.append([task("r", "a", "done", 1.0)])
    with open(spool.path, "ab") as handle:
        handle.write(b'["toppipe-task",{"run":"r","ta')  # the agent died while writing
    reopened = Spool(tmp_path / "spool")
    reopened.append([task("r", "b", "done", 2.0)])
    assert reopened.read(10)[0] == [task("r", "a", "done", 1.0), task("r", "b", "done", 2.0)]


# -- the recorder with a store that is away ----------------------------------


class FlakyStore:
    """Stands in for RecordStore: keeps what it is given, or fails while ``away`` is set."""

    away = False
    written: list[tuple[str, dict]] = []
    attempts = 0

    def __init__(self, url: str):
        FlakyStore.attempts += 1
        if FlakyStore.away:
            raise ToppipeError("cannot reach the record store: connection refused")

    def write(self, events):
        if FlakyStore.away:
            raise OSError("server closed the connection unexpectedly")
        FlakyStore.written.extend(events)

    def close(self):
        pass


@pytest.fixture
def flaky(monkeypatch):
    import toppipe.records

    FlakyStore.away, FlakyStore.written, FlakyStore.attempts = False, [], 0
    monkeypatch.setattr(toppipe.records, "RecordStore", FlakyStore)
    monkeypatch.setattr(recorder_module, "RETRY_SECONDS", (0.05, 0.2))
    return FlakyStore


def run_events(written, run: str) -> list[tuple[str, dict]]:
    return [(topic, msg) for topic, msg in written if msg.get("run") == run]


def test_no_event_is_lost_while_the_store_is_away_and_the_backlog_is_on_disk(flaky, tmp_path, caplog):
    caplog.set_level(logging.WARNING, "toppipe.recorder")
    recorder = RunRecorder("sqlite:///unused", tmp_path / "spool")
    until(lambda: flaky.written, what="the agent's start event written")
    assert flaky.written[0][0] == AGENT_TOPIC
    sent = [started("r1")] + [task("r1", "a", "running", 2.0)]
    for event in sent:
        recorder.log_event(*event)
    until(lambda: len(run_events(flaky.written, "r1")) == 2, what="events written while the store is there")
    flaky.away = True
    away = [task("r1", "a", "done", 3.0), task("r1", "b", "running", 4.0), task("r1", "b", "done", 5.0)]
    for event in away:
        recorder.log_event(*event)
        time.sleep(0.01)
    until(lambda: recorder.spool.size > 0, what="events in the spool")
    retries = flaky.attempts
    until(lambda: flaky.attempts >= retries + 2, what="retries while away")
    assert len(run_events(flaky.written, "r1")) == 2 and recorder.events.qsize() == 0  # held on disk, not in memory
    later = [task("r1", "c", "running", 6.0), task("r1", "c", "done", 7.0)]
    for event in later:
        recorder.log_event(*event)
    flaky.away = False
    until(lambda: recorder.spool.empty and len(run_events(flaky.written, "r1")) == 8, what="the spool drained")
    expected = sent + away + later + [("toppipe-run", {"run": "r1", "state": "done"})]
    got = run_events(flaky.written, "r1")
    assert [m.get("task") for _, m in got] == [m.get("task") for _, m in expected]  # in order
    assert [m["state"] for _, m in got] == [m["state"] for _, m in expected]
    recorder.close()
    lines = [r.getMessage() for r in caplog.records]
    assert sum("is away" in line for line in lines) == 1 and sum("is back" in line for line in lines) == 1


def test_a_new_recorder_drains_the_spool_an_earlier_one_left_before_its_own_start(flaky, tmp_path):
    left = Spool(tmp_path / "spool")
    left.append([started("old"), task("old", "a", "done", 2.0)])
    recorder = RunRecorder("sqlite:///unused", tmp_path / "spool")
    until(lambda: len(flaky.written) == 3, what="the old spool and the start event written")
    assert [topic for topic, _ in flaky.written] == ["toppipe-run", "toppipe-task", AGENT_TOPIC]
    recorder.close()


def test_a_full_spool_says_so_once_and_keeps_what_fit(flaky, tmp_path, caplog):
    caplog.set_level(logging.ERROR, "toppipe.recorder")
    flaky.away = True
    recorder = RunRecorder("sqlite:///unused", tmp_path / "spool", spool_bytes=400)
    for i in range(20):
        recorder.log_event(*task("r1", f"t{i}", "done", float(i)))
    recorder.close()
    assert [r.getMessage() for r in caplog.records if "is full" in r.getMessage()] != []
    assert sum("is full" in r.getMessage() for r in caplog.records) == 1
    assert "records_spool_bytes" in caplog.records[-1].getMessage()
    assert 0 < len(Spool(tmp_path / "spool").read(100)[0]) < 21


def test_malformed_messages_never_reach_the_spool():
    assert well_formed(*task("r", "a", "done", 1.0)) and well_formed(*started("r"))
    assert not well_formed("toppipe-task", {"run": "r", "state": "done", "time": 1.0})  # no task
    assert not well_formed("toppipe-run", {"run": "r", "state": "started", "time": 1.0})  # no pipeline
    assert not well_formed("toppipe-run", {"run": "r", "state": "done", "time": "soon"})
    assert not well_formed("toppipe-run", ["not", "a", "dict"])


# -- the store marks what an earlier agent left unfinished -------------------


@pytest.fixture
def store(tmp_path):
    url = f"sqlite:///{tmp_path}/records.sqlite"
    init(url)
    store = RecordStore(url)
    yield store
    store.close()


def test_an_agent_start_records_unfinished_runs_interrupted_when_last_seen(store):
    store.write([started("cut", when=10.0), task("cut", "a", "running", 11.0), task("cut", "a", "done", 12.5),
                 task("cut", "b", "running", 13.0), started("whole", tasks=("a",), when=20.0),
                 task("whole", "a", "running", 21.0), task("whole", "a", "done", 22.0),
                 ("toppipe-run", {"run": "whole", "state": "done", "time": 22.0})])  # fmt: skip
    store.write([(AGENT_TOPIC, {"state": "started", "time": 30.0})])
    cut = store.run("cut")
    assert cut["state"] == "interrupted" and cut["ended"] == 13.0 and "interrupted" in cut["error"]
    assert {t["name"]: t["state"] for t in store.tasks("cut")} == {"a": "done", "b": "interrupted", "c": "interrupted"}
    assert store.run("whole")["state"] == "done" and store.run("whole")["ended"] == 22.0
    assert [r["id"] for r in store.runs(state="interrupted")] == ["cut"]


def test_an_agent_handing_over_records_its_runs_interrupted_with_the_reason(store):
    store.write([started("going", when=10.0), task("going", "a", "running", 11.0)])
    why = "the scheduler's Slurm job 7 reached its walltime; job 8 takes over when it ends"
    store.write([(AGENT_TOPIC, {"state": "stopping", "time": 40.0, "why": why})])
    going = store.run("going")
    assert going["state"] == "interrupted" and going["error"] == f"interrupted: {why}"
    assert {t["name"]: t["state"] for t in store.tasks("going")}["a"] == "interrupted"


def test_writing_a_batch_twice_adds_nothing_twice(store):
    batch = [started("r"), task("r", "a", "running", 2.0)]
    store.write(batch)
    store.write(batch)  # a spool replays a batch whose acknowledgement a crash lost
    assert store.count_runs() == 1 and len(store.tasks("r")) == 3


# -- a lost scheduler, told apart and said ------------------------------------


def fake_future(status: str, reason: str | None = None):
    return SimpleNamespace(status=status, _state=SimpleNamespace(exception=FutureCancelledError("k", reason)))


def test_a_lost_scheduler_is_told_apart_from_a_cancel_and_a_timeout():
    running, closed = SimpleNamespace(status="running"), SimpleNamespace(status="closed")
    lost = FutureCancelledError("k", interruptions.LOST_REASON)
    assert interruptions.scheduler_lost(lost, running)
    assert interruptions.scheduler_lost(FuturesCancelledError([CancelledFuturesGroup([lost], interruptions.LOST_REASON)]), running)
    assert interruptions.scheduler_lost(OSError("ConnectionPool closing."), closed)
    assert interruptions.scheduler_lost(AttributeError("'NoneType' object has no attribute 'identity'"), closed)
    assert interruptions.scheduler_lost(TimeoutError(), running, [fake_future("cancelled", interruptions.LOST_REASON)])
    assert not interruptions.scheduler_lost(FutureCancelledError("k", "unknown"), running)  # run.cancel()
    assert not interruptions.scheduler_lost(TimeoutError(), running, [fake_future("pending")])  # wait(timeout=...)
    assert not interruptions.scheduler_lost(KeyError("x"), closed)


def test_the_errors_name_the_run_and_say_how_to_go_on():
    record = {"site": "lab", "inventory": os.path.join(os.getcwd(), "inventories", "lab")}
    error = interruptions.run_interrupted(record, "20261130T101010-abc123")
    assert isinstance(error, RunInterruptedError) and isinstance(error, SchedulerLostError) and isinstance(error, ToppipeError)
    assert str(error) == (
        "run 20261130T101010-abc123 was interrupted: the scheduler of site lab is gone; run "
        "`python -m deploy up inventories/lab`, then toppipe.connect('lab').run('20261130T101010-abc123').resume()"
    )
    assert "\n" not in str(interruptions.scheduler_gone(record))
    assert "stopped during it; resume it with" in str(interruptions.run_interrupted(record, "r", recorded=True))


def test_dasks_own_lost_connection_lines_are_quieted_and_nothing_else():
    quiet = interruptions.QuietLostConnection()

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("distributed.client", logging.ERROR, __file__, 1, message, (), None)

    assert not quiet.filter(record("Failed to reconnect to scheduler after %.2f seconds, closing client"))
    assert quiet.filter(record("Scheduler exception:"))


# -- what resume() runs again -------------------------------------------------


PIPELINE = """
from toppipe.pipeline import task

@task
def a(n=3):
    return list(range(n))

@task
def b(a):
    return sum(a)

@task
def c(b):
    return b * 2
"""


@pytest.fixture
def project(tmp_path):
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "demo.py").write_text(textwrap.dedent(PIPELINE))
    return tmp_path


def test_the_selection_and_placement_of_a_recorded_run(project):
    pipeline = load("demo", project=project)
    assert selection_for(pipeline, ["a", "b", "c"]) == (None, None)
    assert selection_for(pipeline, ["a", "b"]) == ("b", None)
    with pytest.raises(PipelineError):
        selection_for(pipeline, ["a", "gone"])
    assert placement_of([{"host": "node1", "slurm_job": "12"}, {"host": "node2", "slurm_job": None}]) == "slurm"
    assert placement_of([{"host": "client", "slurm_job": None}]) == "local"
    assert placement_of([{"host": None, "slurm_job": None}]) == "hosts"
    assert changed_tasks({"a": "1234", "b": "5678"}, {"a": "12345678", "b": "56"}) == ["b"]


class RecordsSession:
    """What origin_from_records needs of a session: its project, records and load()."""

    def __init__(self, project, url):
        self.site, self.record, self.url = "unit", {"project_local": str(project)}, url

    def records(self):
        return RecordStore(self.url)

    def load(self, source):
        return load(source, project=self.record["project_local"])


def record_run(store, pipeline, run_id: str, params: dict, project) -> None:
    keys = cache_keys(pipeline, ["a", "b"], params, str(project))
    msg = dict(started(run_id, ("a", "b"), pipeline="demo")[1], provenance={"tasks": {n: k[:16] for n, k in keys.items()}})
    store.write([("toppipe-run", msg), task(run_id, "a", "done", 2.0), task(run_id, "b", "running", 3.0)])
    store.write([(AGENT_TOPIC, {"state": "started", "time": 4.0})])


def test_a_recorded_run_is_resumed_with_its_pipeline_from_the_project(project, tmp_path, store):
    session = RecordsSession(project, store.url)
    record_run(store, load("demo", project=project), "r1", {}, project)
    pipeline, params, on, only, downstream_of = origin_from_records(session, "r1", None)
    assert (pipeline.name, params, on, only, downstream_of) == ("demo", {}, "hosts", "b", None)


def test_a_recorded_run_whose_code_or_params_changed_is_refused_in_one_line(project, store):
    session = RecordsSession(project, store.url)
    record_run(store, load("demo", project=project), "r2", {"n": 5}, project)
    with pytest.raises(PipelineError) as refused:
        origin_from_records(session, "r2", None)  # the run had n=5
    assert "tasks a, b of pipeline 'demo' changed since" in str(refused.value) and "\n" not in str(refused.value)
    assert origin_from_records(session, "r2", {"n": 5})[1] == {"n": 5}
    (project / "pipelines" / "demo.py").write_text(textwrap.dedent(PIPELINE).replace("sum(a)", "sum(a) + 1"))
    with pytest.raises(PipelineError, match="task b of pipeline 'demo' changed since"):
        origin_from_records(session, "r2", {"n": 5})
    (project / "pipelines" / "demo.py").unlink()
    with pytest.raises(PipelineError, match="does not load from the project as it ran"):
        origin_from_records(session, "r2", {"n": 5})


def test_session_calls_raise_one_toppipe_error_and_a_runs_calls_name_the_run():
    from toppipe.session import Session

    session = Session({"site": "lab", "inventory": "inventories/lab"}, SimpleNamespace(status="closed"))
    with pytest.raises(SchedulerLostError, match="the scheduler of site lab is gone") as plain:
        with session.guard_scheduler():
            raise AttributeError("'NoneType' object has no attribute 'toppipe_workers'")
    assert not isinstance(plain.value, RunInterruptedError)
    with pytest.raises(RunInterruptedError, match="^run r1 was interrupted"):
        with session.guard_scheduler("r1"):
            with session.guard_scheduler():  # a session call made by a run's method
                raise OSError("ConnectionPool closing.")
    with pytest.raises(KeyError):  # not a lost scheduler: left alone
        with session.guard_scheduler("r1"):
            raise KeyError("x")


def test_params_the_provenance_keeps_are_the_resumed_runs_own(project, store):
    session = RecordsSession(project, store.url)
    pipeline = load("demo", project=project)
    keys = cache_keys(pipeline, ["a", "b"], {"n": 5}, str(project))
    provenance = {"tasks": {n: k[:16] for n, k in keys.items()}, "params": {"n": 5}}
    store.write([("toppipe-run", dict(started("r3", ("a", "b"), pipeline="demo")[1], provenance=provenance))])
    store.write([(AGENT_TOPIC, {"state": "started", "time": 4.0})])
    assert origin_from_records(session, "r3", None)[1] == {"n": 5}


def test_a_spool_that_cannot_be_written_loses_that_batch_loudly_and_the_recorder_lives_on(flaky, tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.ERROR, "toppipe.recorder")
    recorder = RunRecorder("sqlite:///unused", tmp_path / "spool")
    until(lambda: flaky.written, what="the agent's start event written")
    flaky.away = True

    def disk_full(events):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(recorder.spool, "append", disk_full)
    recorder.log_event(*task("r1", "a", "done", 1.0))
    until(lambda: any("cannot be written" in r.getMessage() for r in caplog.records), what="the loss said")
    flaky.away = False
    recorder.log_event(*task("r1", "b", "done", 2.0))
    until(lambda: run_events(flaky.written, "r1") == [task("r1", "b", "done", 2.0)], what="the next event written")
    recorder.close()
