"""The local site's servers from Python and their logs: services listed with their health,
a restart of the workers journaled like a CLI command, logs from Python and from
``python -m deploy logs`` (tail, follow, a bad target), up and down from Python."""

from __future__ import annotations

import json
import os
import secrets
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, deployed, line_queue, marked_pids, run_deploy, start_deploy

pytestmark = pytest.mark.integration
ISOLATED = "TOPPIPE_CONTROL_TESTS"

# toppipe.control runs the deploy engine on a thread of its own, and gevent lets a thread start
# local commands only while no other thread of the process has (the other tests run the engine on
# the main thread). So these tests run in a pytest process of their own, which
# test_local_control_isolated.py starts.
if os.environ.get(ISOLATED) != "1":
    pytest.skip("runs in a process of its own (test_local_control_isolated.py)", allow_module_level=True)

SITE = "local"
INVENTORY = "inventories/local"


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory):
    with deployed(INVENTORY, tmp_path_factory.mktemp("controlstate")) as state, pytest.MonkeyPatch.context() as patch:
        patch.setenv("TOPPIPE_STATE_DIR", str(state))
        yield state


@pytest.fixture(scope="module")
def session(state_dir):
    import toppipe

    with toppipe.connect(SITE) as session:
        session.wait_for_workers(2)
        yield session


def service_log(state_dir: Path, name: str) -> Path:
    return state_dir / SITE / "services" / name / "log"


def journals(state_dir: Path, command: str) -> list[Path]:
    found = []
    for folder in sorted((state_dir / SITE / "deploys").iterdir()):
        if json.loads((folder / "inputs.json").read_text())["command"] == command:
            found.append(folder)
    return found


def last_lines_of(read, log: Path, n: int) -> list[str]:
    """*read*() as lines, checked to be the last *n* lines *log* had at some moment while it ran
    (the scheduler writes on: a probe of its port is logged)."""
    before = log.read_text().splitlines()
    lines = read().splitlines()
    after = log.read_text().splitlines()
    assert len(lines) == n
    assert any(after[end - n:end] == lines for end in range(len(before), len(after) + 1)), (lines, after[-n:])
    return lines


def wait_for(condition, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout:.0f} s")


def test_services_lists_every_service_with_its_health(session):
    services = session.services()
    assert {(s.host, s.name) for s in services} == {("localhost", n) for n in ("scheduler", "workers", "jupyter", "dashboard")}
    assert all(s.answering and s.health == "answering" for s in services)
    assert services["scheduler"].target == "localhost/scheduler"
    assert "<td>scheduler</td><td>answering</td>" in services._repr_html_()


def test_restarting_the_workers_from_python_replaces_them_and_is_journaled(session, state_dir):
    before = {p for p in marked_pids(SITE) if f"TOPPIPE_SERVICE={SITE}/workers".encode() in Path(f"/proc/{p}/environ").read_bytes()}
    assert before
    message = session.services()["workers"].restart()
    assert message == "workers on localhost restarted"
    assert not before & set(marked_pids(SITE))  # every process of the old workers is gone
    session.wait_for_workers(2)
    (journal,) = journals(state_dir, "notebook-restart")
    assert json.loads((journal / "inputs.json").read_text())["options"] == {"host": "localhost", "service": "workers"}
    events = [json.loads(line) for line in (journal / "events.jsonl").read_text().splitlines()]
    assert [(e["host"], e["role"], e["outcome"]) for e in events] == [("localhost", "workers", "changed")] * 2
    assert json.loads((journal / "status.json").read_text())["exit_code"] == 0
    assert "last deploy: notebook-restart" in run_deploy("status", INVENTORY, state_dir=state_dir).stdout


def test_session_logs_gives_the_schedulers_last_lines(session, state_dir):
    log = service_log(state_dir, "scheduler")
    last_lines_of(lambda: session.logs("scheduler", tail=5), log, 5)
    scheduler = session.services()["scheduler"]
    last_lines_of(lambda: scheduler.logs(tail=5), log, 5)


def test_a_workers_log_is_found_by_the_workers_name_and_address(session, state_dir):
    worker, log = session.workers()[0], service_log(state_dir, "workers")
    last_lines_of(lambda: session.logs(worker.name, tail=3), log, 3)
    last_lines_of(lambda: session.logs(worker.address, tail=3), log, 3)


def test_a_bad_target_from_python_names_the_known_ones(session):
    from toppipe.errors import ToppipeError

    with pytest.raises(ToppipeError, match="no log named 'schedular'; known targets: scheduler, workers"):
        session.logs("schedular")


def test_the_cli_prints_the_last_lines(state_dir):
    def read() -> str:
        done = run_deploy("logs", INVENTORY, "scheduler", "-n", "5", state_dir=state_dir)
        assert done.code == 0, done.stderr
        return done.stdout

    last_lines_of(read, service_log(state_dir, "scheduler"), 5)


def test_the_cli_lists_the_targets_and_refuses_a_bad_one_in_one_line(state_dir):
    listed = run_deploy("logs", INVENTORY, state_dir=state_dir)
    assert listed.code == 0 and "localhost/scheduler" in listed.stdout.splitlines()
    bad = run_deploy("logs", INVENTORY, "nope", state_dir=state_dir)
    assert bad.code == 2 and bad.stdout == ""
    assert len(bad.stderr.strip().splitlines()) == 1
    assert "no log named 'nope'; known targets: scheduler, workers, jupyter, dashboard" in bad.stderr


def test_the_cli_finds_a_worker_by_name(session, state_dir):
    done = run_deploy("logs", INVENTORY, session.workers()[0].name, "-n", "2", state_dir=state_dir)
    assert done.code == 0, done.stderr
    assert len(done.stdout.splitlines()) == 2
    assert set(done.stdout.splitlines()) <= set(service_log(state_dir, "workers").read_text().splitlines())


def test_the_cli_follows_new_lines(state_dir):
    log = service_log(state_dir, "scheduler")
    follower = start_deploy("logs", INVENTORY, "scheduler", "-n", "1", "-f", state_dir=state_dir)
    lines = line_queue(follower.stdout)
    try:
        assert lines.get(timeout=60) in log.read_text().splitlines()  # it has started
        marker = f"written after the follower started {time.time()}"
        with open(log, "a") as handle:
            handle.write(marker + "\n")
        deadline = time.monotonic() + 60
        while (line := lines.get(timeout=max(0.1, deadline - time.monotonic()))) not in (marker, None):
            pass
        assert line == marker, "the follower ended"
    finally:
        follower.terminate()
        follower.wait(timeout=30)
    assert follower.returncode == 0, follower.stderr.read()
    assert not tails_of(str(log)), "the follower's tail outlived it"


def tails_of(path: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
        except OSError:
            continue
        if argv and argv[0].endswith(b"tail") and path.encode() in argv:
            found.append(int(entry.name))
    return found


def test_in_a_jupyter_kernel_up_shows_its_progress_in_a_widget_and_services_work(session, state_dir):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(f"import toppipe\nsession = toppipe.up({INVENTORY!r})"),
        nbformat.v4.new_code_cell("print(session.services()['jupyter'].health)\nprint(session.logs('scheduler', tail=2))"),
        nbformat.v4.new_code_cell("session.close()"),
    ]
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO)}})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TOPPIPE_STATE_DIR", str(state_dir))  # the kernel inherits it
        client.execute()
    views = [o for o in nb.cells[0].outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(views) == 1, nb.cells[0].outputs
    state = [m["state"] for m in nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"].values()]
    (shown,) = [w["value"] for w in state if w.get("_model_name") == "HTMLModel"]
    assert "up: site from inventories/local: done" in shown and "actions)" in shown
    printed = nb.cells[1].outputs[0]["text"].splitlines()
    assert printed[0] == "answering" and len(printed) == 3


def test_a_task_ended_for_memory_says_so_with_the_limit_and_the_host(session, tmp_path):
    from toppipe.pipeline.graph import PipelineError

    path = tmp_path / "pipelines" / "hog.py"
    path.parent.mkdir(parents=True)
    path.write_text(textwrap.dedent(f"""
        import time
        from toppipe.pipeline import task

        @task
        def hog(nonce={secrets.token_hex(4)!r}):
            block = bytearray(5 * 2**29)  # 2.5 GiB, past the local site's 2 GiB per worker
            for i in range(0, len(block), 4096):
                block[i] = 1
            time.sleep(30)
            return len(block)
        """))
    run = session.load(path).run(on="hosts")
    with pytest.raises(PipelineError) as failure:
        run.wait(timeout=300)
    message = str(failure.value)
    assert "task hog needs more memory than a worker has: worker localhost-" in message, message
    assert "on localhost was ended at" in message and "of its 2.00 GiB limit" in message, message
    assert "KilledWorker" not in message and "\n" not in message
    session.wait_for_workers(2)


def test_up_and_down_from_python_are_journaled_like_the_cli(session, state_dir, capsys):
    import toppipe

    with toppipe.up(INVENTORY) as again:  # the site is up: nothing changes, and the session works
        assert again.client.submit(sum, [1, 2]).result() == 3
    up = journals(state_dir, "up")[-1]
    assert json.loads((up / "inputs.json").read_text())["options"] == {"origin": "notebook"}
    assert json.loads((up / "status.json").read_text())["exit_code"] == 0
    session.down()
    printed = capsys.readouterr().out
    assert "down: site local" in printed and "done" in printed
    assert "scheduler" in printed  # the CLI's progress lines, one per service stopped
    down = journals(state_dir, "down")[-1]
    assert json.loads((down / "status.json").read_text())["exit_code"] == 0
    assert wait_for(lambda: not marked_pids(SITE), "every process of the site ended", timeout=30)
