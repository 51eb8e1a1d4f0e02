"""The site dashboard that ``up`` starts on the local site: served by waitress on loopback
only, nothing answered without its token (pages, Dash's own endpoints, callbacks), and in a
real browser (Debian's Chromium through Playwright) the site page and a run's page, whose
task graph (dash-cytoscape) is coloured by state and selects a task on a click, a service's log
that follows new lines (secrets masked), and a failed task's worker log. Screenshots go
to the test's temporary folder, or to docs/ for the README with TOPPIPE_UPDATE_SCREENSHOTS=1."""

from __future__ import annotations

import json
import os
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.browser import chromium
from tests.conftest import REPO, run_deploy
from toppipe.pipeline.render import PALETTE

pytestmark = pytest.mark.integration

PIPELINE = """
    from toppipe.pipeline import task

    @task
    def stations():
        return ["ams", "ber", "cph"]

    @task
    def readings(stations):
        return {s: [10.0, 12.5, 11.0] for s in stations}

    @task
    def cleaned(readings):
        return readings

    @task
    def daily(cleaned):
        return {s: sum(v) / len(v) for s, v in cleaned.items()}

    @task
    def monthly(cleaned):
        return {s: max(v) for s, v in cleaned.items()}

    @task
    def quality(cleaned):
        raise ValueError("station cph: 3 readings out of range")

    @task
    def anomalies(daily, monthly):
        return {s: monthly[s] - daily[s] for s in daily}

    @task(after="anomalies")
    def report(daily):
        return len(daily)
"""


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    state = tmp_path_factory.mktemp("dashstate")
    up = run_deploy("up", "inventories/local", state_dir=state)
    assert up.code == 0, up.stdout + up.stderr
    yield state
    run_deploy("down", "inventories/local", "--purge", state_dir=state)


@pytest.fixture(scope="module")
def app(state):
    record = json.loads((state / "local" / "connection.json").read_text())
    return record["app"], open(record["app_token_file"]).read().strip()


@pytest.fixture(scope="module")
def failed_run(state, tmp_path_factory):
    """A run of eight tasks on the site's workers: seven done, ``quality`` failed."""
    os.environ["TOPPIPE_STATE_DIR"] = str(state)
    import toppipe

    path = tmp_path_factory.mktemp("dashrun") / "pipelines" / "weather.py"
    path.parent.mkdir(parents=True)
    path.write_text(textwrap.dedent(PIPELINE))
    try:
        with toppipe.connect("local") as session:
            session.wait_for_workers(1)
            run = session.load(path).run(on="hosts", force=True)
            with pytest.raises(Exception, match="station cph"):
                run.wait(timeout=120)
            yield run
    finally:
        del os.environ["TOPPIPE_STATE_DIR"]


@pytest.fixture
def page(app):
    url, token = app
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{url}?token={token}")
        yield page


def screenshot_path(name: str, tmp_path: Path) -> str:
    folder = REPO / "docs" if os.environ.get("TOPPIPE_UPDATE_SCREENSHOTS") == "1" else tmp_path
    return str(folder / name)


def answer(url: str, token: str | None = None, data: bytes | None = None) -> tuple[int, str | None]:
    """``(status, Server header)``."""
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers.get("Server")
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Server")


def get(url: str, token: str | None = None, data: bytes | None = None) -> int:
    return answer(url, token, data)[0]


def test_it_listens_on_loopback_only(app):
    assert app[0].startswith("http://127.0.0.1:")


def test_it_is_served_by_waitress_not_the_development_server(app):
    assert answer(app[0] + "_dash-layout", app[1]) == (200, "toppipe-dashboard")  # werkzeug says "Werkzeug/x.y"


@pytest.mark.parametrize("path", ["", "runs", "_dash-layout", "_dash-dependencies", "assets/x.css"])
def test_nothing_is_served_without_the_token(app, path):
    assert get(app[0] + path) == 401


def test_a_callback_without_the_token_is_refused(app):
    assert get(app[0] + "_dash-update-component", data=b"{}") == 401


def test_the_token_opens_it(app):
    url, token = app
    assert get(url + "_dash-layout", token) == 200
    assert get(url + "_dash-layout", "not-the-token") == 401


def test_the_site_page_shows_the_services_in_cards(page, tmp_path):
    page.wait_for_function("(document.querySelector('#services-table') || {innerText: ''}).innerText.includes('scheduler')",
                           timeout=30_000)  # fmt: skip
    assert page.locator(".navbar #nav-site.active").count() == 1
    assert page.locator(".card .card-header", has_text="Services").count() == 1
    assert page.evaluate("getComputedStyle(document.querySelector('.card')).borderRadius") == "8px"  # the local stylesheet
    page.screenshot(path=screenshot_path("dashboard-site.png", tmp_path), full_page=True)


def test_the_history_plots_show_the_samples_of_a_short_computation(page, failed_run):
    """The failed run computed on the site's workers: the agent's samples (every 10 s) reach the page's plots."""
    page.wait_for_function(
        "document.querySelectorAll('#history-plots .js-plotly-plot').length === 4 && "
        "document.querySelector('#history-cpu .scatterlayer .trace') !== null", timeout=60_000,
    )  # fmt: skip
    assert page.locator("#history-cpu .gtitle").first.text_content() == "CPU per host"


def rgb(colour: str) -> str:
    red, green, blue = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgb({red},{green},{blue})"


def click_node(page, cy: str, node: str, timeout: float = 30) -> None:
    """Click *node* where it is drawn, as a user does: again if the canvas was still being fitted
    (it is resized when the graph arrives, and Cytoscape refits it a moment later), until the
    line under the graph names it."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    deadline = time.monotonic() + timeout
    while True:
        x, y = page.evaluate(f"(() => {{ const p = {cy}.$id('{node}').renderedPosition(), "
                             "r = document.querySelector('#run-graph').getBoundingClientRect(); return [r.x + p.x, r.y + p.y]; })()")  # fmt: skip
        page.mouse.click(x, y)
        try:
            page.wait_for_function(f"(document.querySelector('#run-graph-selected-task') || {{innerText: ''}}).innerText === '{node}'",
                                   timeout=3_000)  # fmt: skip
            return
        except PlaywrightTimeout:
            assert time.monotonic() < deadline, f"clicking task {node} in the graph never selected it"


def test_the_run_page_draws_the_graph_by_state_and_a_click_selects_a_task(page, app, failed_run, tmp_path):
    url, _ = app
    page.goto(f"{url}runs/{failed_run.id}")
    cy = "document.querySelector('#run-graph')._cyreg.cy"
    # the page may not have drawn #run-graph yet: a TypeError there would end the wait, not retry it
    page.wait_for_function(f"(document.querySelector('#run-graph') || {{}})._cyreg && {cy}.nodes().length === 8"
                           f" && {cy}.$id('quality').data('state') === 'failed' && {cy}.$id('report').data('state') === 'done'",
                           timeout=60_000)  # fmt: skip
    assert page.evaluate(f"{cy}.edges().length") == 9
    assert page.evaluate(f"{cy}.$id('quality').style('background-color')").replace(" ", "") == rgb(PALETTE["failed"][0])
    assert page.evaluate(f"{cy}.$id('report').style('background-color')").replace(" ", "") == rgb(PALETTE["done"][0])
    page.evaluate("document.querySelector('#run-graph').scrollIntoView()")
    click_node(page, cy, "quality")
    assert "station cph: 3 readings out of range" in page.inner_text("#run-graph-selected")
    assert page.get_attribute("#run-graph-selected a[href='#failure-quality']", "href") == "#failure-quality"
    page.evaluate("window.scrollTo(0, 0)")
    page.evaluate("document.querySelectorAll('pre').forEach(pre => pre.innerText = pre.innerText.replace(/\\/\\S*\\/pipelines\\//g, 'pipelines/'))")
    page.screenshot(path=screenshot_path("dashboard-run.png", tmp_path), full_page=True)  # paths of this machine left out


def test_a_services_log_follows_new_lines_without_a_reload_and_masks_secrets(page, state, tmp_path):
    page.click("#service-log-localhost-scheduler", timeout=30_000)  # the site page's link
    page.wait_for_function("(document.querySelector('#log-text') || {innerText: ''}).innerText.includes('distributed')", timeout=30_000)
    assert page.url.endswith("/logs/localhost/scheduler")
    page.evaluate("window.notReloaded = true")
    password = (state / "local" / "secrets" / "redis_password").read_text().strip()
    probe = f"toppipe-dashboard-probe-{time.time_ns()}"
    with open(state / "local" / "services" / "scheduler" / "log", "a") as log:
        log.write(f"{probe} password={password}\n")
    page.wait_for_function(f"document.querySelector('#log-text').innerText.includes('{probe}')", timeout=30_000)
    shown = page.inner_text("#log-text")
    assert f"{probe} password=[secret]" in shown and password not in page.content()
    assert page.evaluate("window.notReloaded === true")
    page.evaluate("(box => { box.innerText = box.innerText.replace(/\\/\\S*\\/site-packages\\//g, 'site-packages/');"
                  " box.scrollTop = box.scrollHeight; })(document.querySelector('#log-text'))")  # paths of this machine left out
    page.screenshot(path=screenshot_path("dashboard-logs.png", tmp_path), full_page=True)


def test_a_failed_tasks_worker_log_is_one_click_from_its_run(page, app, failed_run):
    url, _ = app
    page.goto(f"{url}runs/{failed_run.id}")
    page.click("#worker-log-quality", timeout=60_000)
    page.wait_for_function("(document.querySelector('#task-log-text') || {innerText: ''}).innerText.includes('station cph')",
                           timeout=30_000)  # fmt: skip
    assert page.inner_text("#task-log-name") == "quality"
    assert page.inner_text("#task-log-whole") == "localhost/workers: the whole log"
