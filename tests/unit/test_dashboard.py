"""The dashboard without a site: auth, the layout's ids, the pages' functions on a fake
source (one page of runs queried, fast with 10,000 runs), the poller as the only reader of
the site's status, and actions audited."""

from __future__ import annotations

import base64
import logging
import time

import pytest
from dash import no_update
from dash.development.base_component import Component

from tests.unit.dashboard_fakes import FakeSource, make_runs, pipeline
from toppipe.dashboard.app import make_app
from toppipe.dashboard.auth import COOKIE, RedactToken, session_value
from toppipe.dashboard.poller import Poller, next_delay
from toppipe.dashboard.views import graph as graph_view
from toppipe.dashboard.views.timeline import lanes
from toppipe.errors import ToppipeError
from toppipe.pipeline.render import PALETTE

TOKEN = "t0ken-for-tests"


def walk(component):
    """Every Dash component in a tree (children and component-valued props)."""
    stack = [component]
    while stack:
        node = stack.pop()
        if isinstance(node, (list, tuple)):
            stack.extend(node)
        elif isinstance(node, Component):
            yield node
            stack.extend(getattr(node, prop, None) for prop in node._prop_names)


def ids(component) -> set[str]:
    """Every string id in a Dash component tree."""
    return {node.id for node in walk(component) if isinstance(getattr(node, "id", None), str)}


@pytest.fixture
def source() -> FakeSource:
    return FakeSource()


@pytest.fixture
def app(source):
    app = make_app(source, TOKEN, poll_interval=0.05)
    yield app
    app.toppipe.poller.stop()


# -- auth -------------------------------------------------------------------


def test_unauthenticated_requests_are_refused(app):
    client = app.server.test_client()
    page = client.get("/")
    assert page.status_code == 401 and b"login-form" in page.data and TOKEN.encode() not in page.data
    assert client.post("/_dash-update-component", json={}).status_code == 401
    for path in ("/runs", "/_dash-layout", "/_dash-dependencies", "/assets/x.css", "/_favicon.ico"):
        assert client.get(path).status_code == 401, path
    assert client.get("/?token=wrong").status_code == 401
    assert client.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
    client.set_cookie(COOKIE, "forged")
    assert client.get("/_dash-layout").status_code == 401


def test_token_login_sets_an_hmac_cookie_and_drops_the_token_from_the_url(app):
    client = app.server.test_client()
    login = client.get(f"/runs?token={TOKEN}&page=2")
    assert login.status_code == 303 and login.headers["Location"] == "/runs"
    assert TOKEN not in login.headers["Location"]
    cookie = login.headers["Set-Cookie"]
    assert f"{COOKIE}={session_value(TOKEN)}" in cookie and TOKEN not in cookie
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert client.get("/").status_code == 200
    assert client.get("/_dash-layout").status_code == 200


def test_login_form_posts_the_token_and_cannot_redirect_elsewhere(app):
    client = app.server.test_client()
    login = client.post("/_login", data={"token": TOKEN, "next": "//evil.example/x"})
    assert login.status_code == 303 and login.headers["Location"] == "/"
    assert client.get("/runs").status_code == 200
    assert app.server.test_client().post("/_login", data={"token": "nope", "next": "/"}).status_code == 401


def test_bearer_token_works_for_pages_and_callbacks(app):
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    client = app.server.test_client()
    assert client.get("/", headers=bearer).status_code == 200
    body = {"output": "page.children", "outputs": {"id": "page", "property": "children"},
            "inputs": [{"id": "url", "property": "pathname", "value": "/runs"}], "changedPropIds": ["url.pathname"], "state": []}
    answer = client.post("/_dash-update-component", json=body, headers=bearer)
    assert answer.status_code == 200 and b"runs-table" not in answer.data and b"runs-content" in answer.data


def test_the_index_page_loads_nothing_from_the_network(app):
    page = app.server.test_client().get("/", headers={"Authorization": f"Bearer {TOKEN}"}).data.decode()
    assert "/_dash-component-suites/" in page and "https://" not in page and "http://" not in page.replace("http://www.w3.org", "")


def test_the_stylesheet_and_the_graph_layout_are_served_from_here(app):
    import re

    client, bearer = app.server.test_client(), {"Authorization": f"Bearer {TOKEN}"}
    page = client.get("/", headers=bearer).data.decode()
    local = re.findall(r'(?:src|href)="(/[^"]+)"', page)
    wanted = ("/assets/toppipe.css", "/dash_cytoscape/dash_cytoscape_extra.", "/dash_bootstrap_components/_components/")
    for part in wanted:
        found = [url for url in local if part in url]
        assert found, f"{part} is not in the page"
        assert client.get(found[0], headers=bearer).status_code == 200, found[0]
    assert "cdn." not in page and "unpkg" not in page


def test_request_logs_never_show_the_token():
    record = logging.LogRecord("werkzeug", logging.INFO, __file__, 1, '"%s" %s %s', (f"GET /?token={TOKEN}&x=1 HTTP/1.1", "303", "-"), None)
    RedactToken().filter(record)
    assert TOKEN not in record.getMessage() and "token=[redacted]&x=1" in record.getMessage()
    assert any(isinstance(f, RedactToken) for f in logging.getLogger("werkzeug").filters)


def test_an_empty_token_is_refused(source):
    with pytest.raises(ToppipeError):
        make_app(source, "")


# -- layout and pages --------------------------------------------------------


def test_layouts_have_the_ids_browser_tests_use(app):
    board = app.toppipe
    assert {"url", "page", "action-message", "nav-site", "nav-runs"} <= ids(app.layout)
    assert {"site-interval", "site-content", "site-status", "scale-n", "scale-on", "scale-button", "scale-confirm",
            "action-confirm"} <= ids(board.route("/"))  # fmt: skip
    runs_ids = {"runs-content", "runs-filter-pipeline", "runs-filter-state", "runs-prev", "runs-next", "runs-page-info"}
    assert runs_ids <= ids(board.route("/runs"))
    assert {"run-content", "run-interval", "run-cancel", "run-cancel-confirm"} <= ids(board.route("/runs/r00003"))
    assert "not-found" in ids(board.route("/nowhere"))


def test_site_page_shows_services_workers_queue_and_links(app):
    status, content, _ = app.toppipe.site()
    found = ids(content)
    assert {"services-table", "hosts-list", "workers-by-host", "workers-by-job", "slurm-queue", "link-dask", "link-jupyter",
            "service-login-jupyter", "workers-host-node1", "workers-job-101"} <= found  # fmt: skip
    assert "site-fetched" in ids(status)
    buttons = [c for c in walk(content) if isinstance(getattr(c, "id", None), dict)]
    assert {(b.id["action"], b.id["host"], b.id["name"]) for b in buttons} >= {("restart", "login", "jupyter"), ("stop", "node1", "worker")}


def test_the_poller_is_the_only_reader_of_the_site_status(source):
    app = make_app(source, TOKEN, poll_interval=60)
    try:
        client, bearer = app.server.test_client(), {"Authorization": f"Bearer {TOKEN}"}
        body = {"output": "..site-status.children...site-content.children...site-rendered-at.data..",
                "outputs": [{"id": i, "property": p} for i, p in (("site-status", "children"), ("site-content", "children"),
                                                                  ("site-rendered-at", "data"))],
                "inputs": [{"id": "site-interval", "property": "n_intervals", "value": 1}],
                "changedPropIds": ["site-interval.n_intervals"],
                "state": [{"id": "site-rendered-at", "property": "data", "value": None}]}  # fmt: skip
        for _ in range(5):  # five browser refreshes (through Dash) and five direct ones, within one poll interval
            answer = client.post("/_dash-update-component", json=body, headers=bearer)
            assert answer.status_code == 200 and b"services-table" in answer.data
            app.toppipe.site()
            app.toppipe.route("/")
        assert source.site_view_calls == 1
    finally:
        app.toppipe.poller.stop()


def test_an_unchanged_status_is_not_rendered_again(source):
    board = make_app(source, TOKEN, poll_interval=60).toppipe
    try:
        _, content, fetched_at = board.site()
        assert content is not no_update
        _, again, _ = board.site(rendered_at=fetched_at)
        assert again is no_update
    finally:
        board.poller.stop()


def test_runs_page_queries_one_page_and_renders_10000_runs_fast():
    source = FakeSource(runs=make_runs(10_000))
    board = make_app(source, TOKEN).toppipe
    started = time.perf_counter()
    content, info, index, newer_disabled, older_disabled = board.runs(3, None, None, triggered="runs-next")
    took = time.perf_counter() - started
    print(f"\nruns page of 10,000 runs rendered in {took * 1000:.1f} ms")
    assert took < 1.0
    assert source.run_queries == [(50, 200, None, None)] and source.count_queries == 1
    assert index == 4 and info == "runs 201-250 of 10000" and not newer_disabled and not older_disabled
    rows = [c for c in walk(content) if str(getattr(c, "id", "")).startswith("run-row-")]
    assert "runs-table" in ids(content) and len(rows) == 50


def test_runs_callback_over_http_with_10000_runs_is_fast():
    source = FakeSource(runs=make_runs(10_000))
    app = make_app(source, TOKEN)
    outputs = [("runs-content", "children"), ("runs-page-info", "children"), ("runs-page-index", "data"),
               ("runs-prev", "disabled"), ("runs-next", "disabled")]  # fmt: skip
    inputs = [("runs-prev", "n_clicks", 0), ("runs-next", "n_clicks", 1), ("runs-filter-pipeline", "value", None),
              ("runs-filter-state", "value", None), ("runs-interval", "n_intervals", 0)]  # fmt: skip
    body = {"output": ".." + "...".join(f"{i}.{p}" for i, p in outputs) + "..",
            "outputs": [{"id": i, "property": p} for i, p in outputs],
            "inputs": [{"id": i, "property": p, "value": v} for i, p, v in inputs], "changedPropIds": ["runs-next.n_clicks"],
            "state": [{"id": "runs-page-index", "property": "data", "value": 0}]}  # fmt: skip
    client = app.server.test_client()
    started = time.perf_counter()
    answer = client.post("/_dash-update-component", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    took = time.perf_counter() - started
    print(f"\nruns callback (HTTP, JSON) with 10,000 runs answered in {took * 1000:.1f} ms, {len(answer.data)} bytes")
    assert answer.status_code == 200 and b"runs 51-100 of 10000" in answer.data and took < 1.0
    assert source.run_queries == [(50, 50, None, None)]


def test_runs_page_filters_and_clamps(source):
    board = make_app(source, TOKEN).toppipe
    source.all_runs = make_runs(120)
    content, info, index, _, older_disabled = board.runs(99, "weather", None)
    assert index == 1 and info == "runs 51-60 of 60" and older_disabled
    assert source.run_queries[-1] == (50, 50, "weather", None)
    assert board.runs(1, "weather", "failed", triggered="runs-filter-state")[2] == 0  # a new filter: the first page
    assert "runs-empty" in ids(board.runs(0, "nope", None)[0])


def test_run_page_shows_state_progress_graph_failures_and_tasks(source):
    board = make_app(source, TOKEN).toppipe
    content, graph, stop_refreshing, period, cancel_disabled = board.run("r00003")
    found = ids(content)
    assert {"run-state", "run-progress", "run-timeline", "run-failures", "run-tasks", "run-provenance",
            "task-chunks", "task-clean", "task-aggregate", "task-report", "failure-clean", "traceback-clean"} <= found  # fmt: skip
    assert not stop_refreshing and not cancel_disabled and period == 2000  # r00003 is running
    text = str(content)
    assert "ValueError: bad row 17" in text and "cached-mark" in text and "abc123" in text
    assert "1/4" not in text and "2/4 tasks settled" in text
    assert board.run("r00002")[2] is True  # done: refreshing stops
    assert "run-missing" in ids(board.run("nope")[0])


def test_the_graph_stays_on_the_run_page_and_each_refresh_fills_it(source):
    board = make_app(source, TOKEN).toppipe
    page = board.route("/runs/r00003")
    assert {"run-graph", "run-graph-note", "run-graph-selected", "run-graph-section"} <= ids(page)
    above, below, elements, note, selected, style, *_ = board.run_page("r00003")
    assert "run-graph" not in ids(above) | ids(below)  # the graph is not drawn again: its zoom and selection stay
    assert elements == [] and style == {"display": "none"}  # this source gives no pipeline: its SVG instead
    assert base64.b64decode(note.src.split(",", 1)[1]).decode() == source.svg and note.id == "run-graph-svg"
    assert board.run_page(None)[2:6] == (no_update,) * 4


def test_the_graph_is_drawn_by_cytoscape_coloured_by_state(source):
    source.pipeline = pipeline()
    board = make_app(source, TOKEN).toppipe
    _, _, elements, note, selected, style, *_ = board.run_page("r00003")
    nodes = {e["data"]["id"]: e["data"] for e in elements if "source" not in e["data"]}
    edges = {(e["data"]["source"], e["data"]["target"]): e["data"]["kind"] for e in elements if "source" in e["data"]}
    assert {n: d["state"] for n, d in nodes.items()} == {"chunks": "cached", "clean": "failed", "aggregate": "running", "report": "pending"}
    assert edges == {("chunks", "clean"): "input", ("clean", "aggregate"): "input", ("clean", "report"): "input",
                     ("aggregate", "report"): "after"}  # fmt: skip
    assert nodes["clean"]["host"] == "node2" and nodes["clean"]["error"] == "ValueError: bad row 17"
    assert note is None and selected == "click a task to select it" and style["height"].endswith("px")
    rules = {rule["selector"]: rule["style"] for rule in graph_view.STYLESHEET}
    fill, stroke = PALETTE["failed"]
    assert rules["node[state = 'failed']"] == {"background-color": fill, "border-color": stroke}
    assert rules["edge[kind = 'after']"] == {"line-style": "dashed"}


def test_a_click_on_a_node_selects_its_task_and_refreshes_keep_it(source):
    source.pipeline = pipeline()
    board = make_app(source, TOKEN).toppipe
    _, _, elements, *_ = board.run_page("r00003")
    clicked = next(e["data"] for e in elements if e["data"].get("id") == "clean")
    line = board.select_task(clicked)
    text, links = str(line), {c.href for c in walk(line) if getattr(c, "href", None)}
    assert "clean" in text and "on node2" in text and "ValueError: bad row 17" in text
    assert links == {"#task-clean", "#failure-clean"}
    assert board.select_task(None) is no_update and board.select_task({}) is no_update  # the graph drawn again, no click
    source.task_rows["r00003"][1] = {**source.task_rows["r00003"][1], "state": "running", "error": None}
    selected = board.run_page("r00003", clicked)[4]  # the next refresh: the same task, its new state
    assert "run-graph-selected-task" in ids(selected) and "state-running" in str(selected) and "#failure-clean" not in str(selected)


def test_a_map_in_the_graph_links_to_its_elements():
    found = graph_view.elements({"numbers": {"inputs": []}, "clean": {"inputs": ["numbers"]}}, {}, {"clean": "/runs/r?task=clean&state="})
    clean = next(e["data"] for e in found if e["data"].get("id") == "clean")
    assert clean["state"] == "pending" and {c.href for c in walk(graph_view.selected(clean)) if getattr(c, "href", None)} == {
        "#task-clean", "/runs/r?task=clean&state="}


def test_the_canvas_is_as_tall_as_the_tallest_layer_within_bounds():
    wide = {"top": {}} | {f"t{i}": {"inputs": ["top"]} for i in range(10)}
    assert graph_view.height({"a": {}, "b": {"inputs": ["a"]}}) == 160  # a chain: one task per layer
    assert 160 < graph_view.height(wide) < graph_view.height(wide | {f"u{i}": {"after": ["top"]} for i in range(3)}) <= 760
    assert graph_view.height({f"t{i}": {} for i in range(300)}) == 760


def test_a_graph_of_too_many_tasks_is_not_drawn(source):
    source.pipeline = pipeline()
    source.task_rows["r00003"] = [{"name": f"t{i}", "state": "done"} for i in range(301)]
    _, _, elements, note, _, style, *_ = make_app(source, TOKEN).toppipe.run_page("r00003")
    assert elements == [] and style == {"display": "none"} and note.children == "graph not drawn: 301 tasks (more than 300)"


def test_timeline_puts_overlapping_tasks_of_a_host_in_lanes():
    tasks = [{"name": n, "state": "done", "host": "node1", "started": s, "ended": e}
             for n, s, e in (("a", 0, 10), ("b", 5, 8), ("c", 9, 12), ("d", 11, 13))]  # fmt: skip
    placed = {t["name"]: lane for lane, t, _, _ in lanes(tasks + [{"name": "e", "state": "pending", "host": None, "started": None}], now=20)}
    assert placed == {"a": "node1", "b": "node1 #2", "c": "node1 #2", "d": "node1"}
    running = lanes([{"name": "r", "state": "running", "host": "n", "started": 5, "ended": None}], now=9)
    assert running[0][2:] == (5, 9)


def test_a_failing_read_is_one_line(source):
    board = make_app(source, TOKEN).toppipe
    source.run = lambda run_id: (_ for _ in ()).throw(OSError("database is locked\nmore"))
    content, graph, stop_refreshing, _, _ = board.run("r00003")
    assert content.children == "cannot read run r00003: OSError: database is locked" and not stop_refreshing
    assert graph is no_update


# -- actions -----------------------------------------------------------------


def test_an_action_calls_the_source_once_and_is_audited(source):
    journal = []
    app = make_app(source, TOKEN, on_action=journal.append)
    board = app.toppipe
    pending, message, shown = board.ask_service_action({"type": "service-action", "action": "restart", "host": "login", "name": "jupyter"}, 1)
    assert shown and message == "Restart jupyter on login?" and source.actions == []  # asking does nothing yet
    assert board.confirm_pending(pending, None) is no_update  # a page opened "fires" the dialog's callback: nothing done
    assert board.confirm_pending(pending, 1) == "jupyter on login restarted"
    assert source.actions == [("restart_service", {"host": "login", "name": "jupyter"})]
    assert journal == list(board.actions.audit)
    assert journal[0]["action"] == "restart_service" and journal[0]["args"] == {"host": "login", "name": "jupyter"}
    assert journal[0]["result"] == "jupyter on login restarted" and journal[0]["ok"] is True


def test_a_rerendered_button_does_not_ask(source):
    board = make_app(source, TOKEN).toppipe
    assert board.ask_service_action({"type": "service-action", "action": "stop", "host": "a", "name": "b"}, 0)[2] is False


def test_scale_and_cancel_go_through_perform(source):
    journal = []
    board = make_app(source, TOKEN, on_action=journal.append).toppipe
    assert board.ask_scale(-1, "slurm", 1)[1] is False and "whole number" in board.ask_scale(-1, "slurm", 1)[2]
    assert board.ask_scale(3, "slurm", 1)[:2] == ("Scale to 3 workers on slurm?", True)
    assert board.ask_scale(3, "slurm", None)[1] is False
    assert board.confirm_scale(3, "slurm", None) is no_update and board.confirm_cancel("r00003", None) is no_update
    assert source.actions == []  # opening a page (callbacks fired with no click) does nothing
    assert board.confirm_scale(3.0, "slurm", 1) == "scaling to 3 workers on slurm"
    assert board.ask_cancel("r00003", 1) == ("Cancel run r00003? Its unfinished tasks stop.", True)
    assert board.confirm_cancel("r00003", 1) == "run r00003 cancelled"
    assert source.actions == [("scale", {"n": 3, "on": "slurm"}), ("cancel_run", {"run_id": "r00003"})]
    assert [e["action"] for e in journal] == ["scale", "cancel_run"]


def test_action_errors_are_one_line_never_a_traceback(source):
    journal = []
    board = make_app(source, TOKEN, on_action=journal.append).toppipe
    assert board.perform("cancel_run", run_id="nope") == "cancel_run failed: no run nope"
    source.fail_with = RuntimeError("ssh: connection refused\nTraceback (most recent call last): ...")
    assert board.perform("stop_service", host="login", name="jupyter") == "stop_service failed: RuntimeError: ssh: connection refused"
    assert board.perform("rm_rf", path="/") .startswith("rm_rf failed: unknown action")
    assert board.perform("scale", n="many", on="slurm").startswith("scale failed: scale: n must be")
    assert [e["ok"] for e in journal] == [False, False, False, False]
    assert ("rm_rf", {"path": "/"}) not in source.actions and len(source.actions) == 2


def test_a_broken_journal_does_not_hide_the_outcome(source):
    board = make_app(source, TOKEN, on_action=lambda entry: 1 / 0).toppipe
    assert board.perform("scale", n=1, on="hosts") == "scaling to 1 workers on hosts"


# -- the poller ----------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap_and_resets():
    assert next_delay(3, 3, failed=True) == 6 and next_delay(48, 3, failed=True) == 60 and next_delay(60, 3, True) == 60
    assert next_delay(60, 3, failed=False) == 3


def test_poller_thread_backs_off_while_the_source_fails_and_recovers():
    source = FakeSource()
    source.fail_with = ToppipeError("scheduler unreachable\ndetails")
    clock = iter(range(1000, 10**6)).__next__
    poller = Poller(source, interval=0.01, max_backoff=0.08, clock=clock)
    try:
        data, fetched_at, error = poller.latest(wait=2)
        assert data is None and fetched_at is None and error == "ToppipeError: scheduler unreachable"
        deadline = time.monotonic() + 5
        while poller.delay < 0.08 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert poller.delay == 0.08
        calls = source.site_view_calls
        time.sleep(0.05)
        assert source.site_view_calls - calls <= 1  # backed off: at most one more call in 50 ms
        source.fail_with = None
        while poller.latest()[0] is None and time.monotonic() < deadline:
            time.sleep(0.01)
        data, fetched_at, error = poller.latest()
        assert data == source.view and fetched_at >= 1000 and error is None and poller.delay == 0.01
    finally:
        poller.stop()
    assert not poller._thread.is_alive()


def test_poller_keeps_the_last_good_view_and_the_last_error():
    source = FakeSource()
    poller = Poller(source, interval=60)
    try:
        poller.poll_once()
        source.fail_with = OSError("no route to host")
        poller.poll_once()
        data, fetched_at, error = poller.latest()
        assert data == source.view and fetched_at is not None and error == "OSError: no route to host"
    finally:
        poller.stop()


def test_one_poller_thread_per_app(app):
    board = app.toppipe
    for _ in range(3):
        board.site()
    import threading

    assert sum(t.name == "toppipe-dashboard-poller" and t is board.poller._thread for t in threading.enumerate()) == 1


def test_the_history_plots_cpu_and_memory_per_host_throughput_and_the_queue():
    from toppipe.dashboard.views.site import history_plots

    samples = [{"time": 1000.0 + 10 * i, "hosts": {"node1": {"cpu": 50.0 * i, "memory": 2**30 * i, "workers": 1}},
                "throughput": float(i), "slurm": {"running": i, "pending": 1}} for i in range(3)]  # fmt: skip
    graphs = {g.id: g.figure for g in history_plots(samples).children}
    assert list(graphs) == ["history-cpu", "history-memory", "history-throughput", "history-queue"]
    assert graphs["history-cpu"]["data"][0]["name"] == "node1" and graphs["history-cpu"]["data"][0]["y"] == [0.0, 50.0, 100.0]
    assert graphs["history-memory"]["data"][0]["y"] == [0.0, 1.0, 2.0]  # GiB
    assert [line["name"] for line in graphs["history-queue"]["data"]] == ["running", "pending"]
    assert history_plots([]).id == "history-plots"
