"""The dashboard's logs on a fake source: links from a service row, a Slurm job and a failed task,
a followed log showing only what was appended (bounded reads), a failed task's worker log cut
around the failure, the host a task ran on named as the inventory names it, secrets masked."""

from __future__ import annotations

import datetime
import json
from types import SimpleNamespace

import pytest
from dash import no_update

from tests.unit.dashboard_fakes import T0, FakeSource
from tests.unit.test_dashboard import TOKEN, ids, walk
from toppipe.dashboard.app import make_app
from toppipe.dashboard.site import RealSite, inventory_host, masked, site_secrets
from toppipe.dashboard.views import logs as logs_view
from toppipe.dashboard.views.logs import TAIL_LINES, new_lines, stamp
from toppipe.errors import ToppipeError


@pytest.fixture
def source() -> FakeSource:
    source = FakeSource()
    source.logs["login/scheduler"] = [f"scheduler line {i}" for i in range(5)]
    return source


@pytest.fixture
def app(source):
    app = make_app(source, TOKEN, poll_interval=60)
    yield app
    app.toppipe.poller.stop()


def hrefs(component) -> set[str]:
    return {node.href for node in walk(component) if isinstance(getattr(node, "href", None), str)}


def logged(epoch: float, text: str) -> str:
    """A line as dask logs it: local time with milliseconds."""
    return datetime.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S,%f")[:-3] + f" - distributed.worker - INFO - {text}"


# -- following: the lines after those already shown ------------------------------------


def test_only_the_appended_lines_are_new():
    assert new_lines([], ["a", "b"]) == (["a", "b"], False)
    assert new_lines(["a", "b"], ["a", "b", "c"]) == (["c"], False)
    assert new_lines(["a", "b", "c"], ["b", "c", "d", "e"]) == (["d", "e"], False)  # the window slid
    assert new_lines(["a", "b"], ["a", "b"]) == ([], False)
    assert new_lines(["x", "x"], ["x", "x", "x"]) == (["x"], False)  # a repeated line, appended once


def test_a_rotated_log_or_a_flood_starts_over_and_says_so():
    assert new_lines(["a", "b"], ["new 1", "new 2"]) == (["new 1", "new 2"], True)
    assert new_lines(["a", "b"], []) == ([], True)


def test_a_followed_log_sends_only_what_was_appended_and_reads_a_bounded_tail(app, source):
    board = app.toppipe
    text, status, shown = board.follow_log("login/scheduler", None)
    assert text.splitlines() == [f"scheduler line {i}" for i in range(5)] and "5 lines" in status
    assert board.follow_log("login/scheduler", shown)[0] is no_update  # nothing new: the text is not sent again
    source.logs["login/scheduler"] += ["a new line"]
    text, status, shown = board.follow_log("login/scheduler", shown)
    assert text.splitlines()[-2:] == ["scheduler line 4", "a new line"] and len(shown) == 6
    source.logs["login/scheduler"] += [f"flood {i}" for i in range(3 * TAIL_LINES)]
    text, status, shown = board.follow_log("login/scheduler", shown)
    assert len(shown) == TAIL_LINES and shown[-1] == f"flood {3 * TAIL_LINES - 1}" and "earlier lines dropped" in status
    assert {lines for _, lines in source.log_reads} == {TAIL_LINES}


def test_a_log_that_cannot_be_read_is_one_line_and_keeps_what_is_shown(app):
    text, status, shown = app.toppipe.follow_log("node9/workers", ["kept"])
    assert text is no_update and shown is no_update
    assert "cannot read the log of node9/workers" in str(status.children) and "\n" not in str(status.children)


def test_the_follow_callback_is_wired(app, source):
    outputs = [("log-text", "children"), ("log-status", "children"), ("log-lines", "data")]
    body = {"output": ".." + "...".join(f"{i}.{p}" for i, p in outputs) + "..",
            "outputs": [{"id": i, "property": p} for i, p in outputs],
            "inputs": [{"id": "log-interval", "property": "n_intervals", "value": 3}], "changedPropIds": ["log-interval.n_intervals"],
            "state": [{"id": "log-target", "property": "data", "value": "login/scheduler"},
                      {"id": "log-lines", "property": "data", "value": [f"scheduler line {i}" for i in range(4)]}]}  # fmt: skip
    answer = app.server.test_client().post("/_dash-update-component", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200
    assert json.loads(answer.data)["response"]["log-lines"]["data"][-2:] == ["scheduler line 3", "scheduler line 4"]


# -- where the links are --------------------------------------------------------------


def test_the_log_pages_route_to_their_targets(app):
    board = app.toppipe
    page = board.route("/logs/login/scheduler")
    store = next(n for n in walk(page) if getattr(n, "id", None) == "log-target")
    assert store.data == "login/scheduler" and {"log-text", "log-interval", "log-status"} <= ids(page)
    assert next(n for n in walk(board.route("/logs/slurm-job/101")) if getattr(n, "id", None) == "log-target").data == "101"
    task = next(n for n in walk(board.route(logs_view.task_href("r 1/x", "clean[3]"))) if getattr(n, "id", None) == "task-log-ids")
    assert task.data == {"run": "r 1/x", "task": "clean[3]"}
    assert "not-found" in ids(board.route("/logs/only-one-part"))


def test_a_service_row_and_a_slurm_job_link_to_their_logs(app):
    _, content, _ = app.toppipe.site()
    links = hrefs(content)
    assert {"/logs/login/scheduler", "/logs/node1/worker", "/logs/slurm-job/101"} <= links
    assert "job-log-101" in ids(content)


def test_a_failure_on_the_run_page_links_to_its_workers_log_around_it(app):
    content, *_ = app.toppipe.run("r00003")
    link = next(n for n in walk(content) if getattr(n, "id", None) == "worker-log-clean")
    assert link.href == "/logs/task/r00003/clean" and "Slurm job" in link.children
    assert "task-log-ids" in ids(app.toppipe.route(link.href))  # one click from the run page


# -- a failed task's log --------------------------------------------------------------


def test_a_slurm_tasks_page_shows_its_jobs_output_around_the_failure(app, source):
    # clean ran in Slurm job 101 from T0 + 1 to T0 + 4
    source.logs["101"] = [logged(T0 - 600, "Start worker at: tls://10.0.0.5:4000"), logged(T0 + 0.9, "just before"),
                          logged(T0 + 4.3, "Compute Failed"),
                          "Key:       clean-abc", logged(T0 + 20, "heartbeat"), logged(T0 + 300, "much later")]  # fmt: skip
    page = app.toppipe.task_log({"run": "r00003", "task": "clean"})
    text = next(n for n in walk(page) if getattr(n, "id", None) == "task-log-text")
    shown = "".join(span.children for span in text.children)
    assert "just before" in shown and "Compute Failed" in shown and "Key:       clean-abc" in shown and "heartbeat" in shown
    assert "Start worker" not in shown and "much later" not in shown
    hits = [span.children.split(" - ")[-1] for span in text.children if span.className == "log-hit"]
    assert hits == ["Compute Failed\n", "Key:       clean-abc\n"]  # logged while clean ran, or as it ended
    assert "/logs/slurm-job/101" in hrefs(page) and source.log_reads == [("101", logs_view.AROUND_LINES)]


def test_a_host_tasks_page_reads_its_hosts_workers_log(app, source):
    source.task_rows["r00003"][1].update(slurm_job=None, host="node2.cluster")
    source.logs["node2/workers"] = ["no time on this line"]
    page = app.toppipe.task_log({"run": "r00003", "task": "clean"})
    assert source.log_reads[-1][0] == "node2/workers" and "/logs/node2/workers" in hrefs(page)
    note = next(n for n in walk(page) if getattr(n, "id", None) == "task-log-note")
    assert "its last 100 lines" in note.children  # nothing logged around the failure: the end of the log


def test_an_unknown_task_or_an_unreadable_log_is_one_line(app):
    assert "no task nope in run r00003" in app.toppipe.task_log({"run": "r00003", "task": "nope"}).children
    error = app.toppipe.task_log({"run": "r00003", "task": "clean"})  # the fake has no log 101
    assert "cannot read the log of task clean" in error.children and "\n" not in error.children


def test_log_times_are_read_from_dasks_format():
    assert stamp(logged(T0, "x")) == pytest.approx(T0, abs=0.001)
    assert stamp("Traceback (most recent call last):") is None


# -- the real site's pure parts ----------------------------------------------------------


def test_a_tasks_hostname_is_named_as_the_inventory_names_it():
    hosts = [("node1", "10.0.0.1", False), ("node2", "10.0.0.2", False)]
    assert inventory_host("node2", hosts, set()) == "node2"
    assert inventory_host("node2.cluster.example", hosts, set()) == "node2"
    assert inventory_host("10.0.0.1", hosts, set()) == "node1"
    assert inventory_host("elsewhere", hosts, set()) == "elsewhere"  # unknown: said as it is (the read then fails in one line)
    assert inventory_host("d4c0ffee", [("localhost", "127.0.0.1", True)], {"d4c0ffee"}) == "localhost"
    assert inventory_host("d4c0ffee", [("desk", "127.0.0.1", True), ("node1", "10.0.0.1", False)], {"d4c0ffee"}) == "desk"


def test_every_secret_of_the_site_is_masked(tmp_path):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "tls").mkdir()
    (tmp_path / "secrets" / "redis_password").write_text("r3dis-passw0rd-long\n")
    (tmp_path / "secrets" / "short").write_text("abc")
    (tmp_path / "tls" / "db.key").write_text("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEF\n-----END PRIVATE KEY-----\n")
    secrets = site_secrets(tmp_path)
    assert secrets == ["r3dis-passw0rd-long", "MIIEvQIBADANBgkqhkiG9w0BAQEF"]
    text = masked("auth r3dis-passw0rd-long ok\nkey MIIEvQIBADANBgkqhkiG9w0BAQEF\nabc stays", secrets)
    assert text == "auth [secret] ok\nkey [secret]\nabc stays"


def test_the_real_site_locates_a_log_once_and_reads_it_masked(tmp_path, monkeypatch):
    import deploy.logs
    from deploy import DeployError

    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "dashboard_token").write_text("t0ken-t0ken-t0ken\n")
    located = []

    class Control:
        def log_target(self, target):
            located.append(target)
            return SimpleNamespace(state_dir=tmp_path), f"log of {target}"

    def read(site, found, lines):
        if found == "log of node9/workers":
            raise DeployError("cannot read the log of node9/workers: host node9 is unreachable (timed out)")
        return f"{lines} lines of the {found}: token t0ken-t0ken-t0ken"

    real = RealSite("lab")
    monkeypatch.setattr(real, "control", Control)
    monkeypatch.setattr(deploy.logs, "read", read)
    assert real.read_log("login/scheduler", 5) == "5 lines of the log of login/scheduler: token [secret]"
    assert real.read_log("login/scheduler", 7).startswith("7 lines")
    assert located == ["login/scheduler"]  # located once, read twice
    with pytest.raises(ToppipeError, match="^cannot read the log of node9/workers: host node9 is unreachable"):
        real.read_log("node9/workers", 5)
