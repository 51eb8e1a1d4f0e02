"""The site dashboard served by ``up`` on the lab, in a real browser: Debian's
Chromium driven by Playwright. Pages load, a run's page follows the run while
it progresses, a failed Slurm task's job output is one click from its run,
an action works and is journaled, an unauthenticated request is refused,
and the Slurm controller sees toppipe's queue queries at most
once every few seconds. Screenshots go to the test's temporary folder, or to
docs/ for the README with TOPPIPE_UPDATE_SCREENSHOTS=1."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.browser import chromium
from tests.conftest import REPO

pytestmark = pytest.mark.lab



def screenshot_path(name: str, tmp_path: Path) -> str:
    folder = REPO / "docs" if os.environ.get("TOPPIPE_UPDATE_SCREENSHOTS") == "1" else tmp_path
    return str(folder / name)


@pytest.fixture(scope="module")
def app(site, state_dir) -> tuple[str, str]:
    record = json.loads((state_dir / "lab" / "connection.json").read_text())
    return record["app"], Path(record["app_token_file"]).read_text().strip()


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser, app):
    url, token = app
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # the confirm dialogs of actions
    page.goto(f"{url}?token={token}")
    yield page
    context.close()


def test_an_unauthenticated_request_is_refused(app):
    url, _ = app
    for path in ("", "_dash-layout", "runs"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url + path, timeout=10)
        assert refused.value.code == 401, path


def test_the_site_page_shows_every_service_and_worker(page, tmp_path):
    page.wait_for_selector("#services-table", timeout=30_000)
    page.wait_for_function("document.querySelector('#services-table').innerText.includes('scheduler')", timeout=30_000)
    text = page.inner_text("#services-table")
    for name in ("scheduler", "workers", "postgres", "redis", "jupyter", "lsyncd"):
        assert name in text, name
    page.screenshot(path=screenshot_path("dashboard-site.png", tmp_path))


def test_a_nodes_service_log_follows_new_lines_without_a_reload(page, lab):
    """node1's workers log, read through the jump: a line appended on node1 reaches the open page."""
    page.click("#service-log-node1-workers", timeout=30_000)  # the site page's link
    page.wait_for_function("(document.querySelector('#log-text') || {innerText: ''}).innerText.includes('distributed')", timeout=60_000)
    assert page.url.endswith("/logs/node1/workers")
    page.evaluate("window.notReloaded = true")
    probe = f"toppipe-dashboard-probe-{time.time_ns()}"
    lab.ssh("node1", f"echo {probe} >> ~/.toppipe/lab/services/workers/log")
    page.wait_for_function(f"document.querySelector('#log-text').innerText.includes('{probe}')", timeout=60_000)
    assert page.evaluate("window.notReloaded === true")


def test_the_history_plots_show_a_short_computation_on_the_lab(page, session):
    """200 tasks on the lab's workers: a sample of the agent (every 10 s) after them counts
    them, and the site page's plots (open since before) draw a throughput above zero."""
    started = time.time()
    done_before = max((s["done"] for s in session.history(since=started - 60)), default=0)
    futures = session.client.map(lambda x: x + 1, range(200), pure=False)
    assert sum(session.client.gather(futures)) == sum(range(1, 201))
    deadline = time.monotonic() + 60
    while not any(s["time"] > started and s["done"] >= done_before + 200 and s["throughput"] > 0 for s in session.history(since=started)):
        assert time.monotonic() < deadline, "no sample of the agent counted the 200 tasks within 60 s"
        time.sleep(1)
    page.wait_for_function(
        "document.querySelectorAll('#history-plots .js-plotly-plot').length === 4 && "
        "Math.max(...document.querySelector('#history-throughput .js-plotly-plot').data[0].y) > 0", timeout=60_000,
    )  # fmt: skip
    assert page.locator("#history-cpu .gtitle").first.text_content() == "CPU per host"


def test_the_run_page_follows_a_run_while_it_progresses(page, app, session, tmp_path):
    path = tmp_path / "pipelines" / "steps.py"
    path.parent.mkdir(parents=True)
    path.write_text(
        "import time\nfrom toppipe.pipeline import task\n\n"
        "@task\ndef first():\n    time.sleep(4)\n    return 1\n\n"
        "@task\ndef second(first):\n    time.sleep(4)\n    return first + 1\n"
    )
    run = session.load(path).run(on="hosts", force=True)
    url, _ = app
    page.goto(f"{url}runs/{run.id}")
    page.wait_for_function("document.querySelector('#run-state') && document.querySelector('#run-state').innerText.includes('running')", timeout=30_000)
    page.wait_for_function("document.querySelector('#run-state').innerText.includes('done')", timeout=60_000)
    assert run.wait(timeout=30).result("second") == 2
    page.screenshot(path=screenshot_path("dashboard-run.png", tmp_path))
    page.goto(f"{url}runs")
    page.wait_for_selector("#runs-table", timeout=30_000)
    assert run.id in page.inner_text("#runs-table")


def test_a_failed_slurm_tasks_job_output_is_one_click_from_the_run_page(page, app, session, tmp_path):
    path = tmp_path / "pipelines" / "broken.py"
    path.parent.mkdir(parents=True)
    path.write_text("from toppipe.pipeline import task\n\n@task\ndef broken():\n    raise ValueError('broken on purpose')\n")
    session.scale(1, on="slurm")
    try:
        run = session.load(path).run(on="slurm", force=True)
        with pytest.raises(Exception, match="broken on purpose"):
            run.wait(timeout=300)
        url, _ = app
        page.goto(f"{url}runs/{run.id}")
        page.click("#worker-log-broken", timeout=60_000)  # the one click
        page.wait_for_function("(document.querySelector('#task-log-text') || {innerText: ''}).innerText.includes('broken on purpose')",
                               timeout=60_000)  # fmt: skip
        where = page.inner_text("#task-log-where")
        assert "Slurm job" in where, where
        job = where.split("Slurm job ")[1].split(",")[0]
        assert page.get_attribute("#task-log-whole", "href") == f"/logs/slurm-job/{job}"
        page.screenshot(path=screenshot_path("dashboard-task-log.png", tmp_path), full_page=True)
    finally:
        session.scale(0, on="slurm")


def test_an_action_restarts_a_service_and_is_journaled(page, state_dir, lab):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.wait_for_selector("#services-table", timeout=30_000)
    for _ in range(3):  # the table is rebuilt whenever the poller read something new: a click on a row being replaced is lost
        button = page.locator('button[data-action=restart][data-service="desktop/lsyncd"]').first
        button.wait_for(timeout=30_000)
        try:
            with page.expect_event("dialog", timeout=10_000):  # the action's confirm dialog (accepted by the page fixture)
                button.click()
            break
        except PlaywrightTimeout:
            continue
    else:
        pytest.fail("three clicks on lsyncd's restart button brought no confirm dialog")
    try:
        page.wait_for_function("document.querySelector('#action-message') && document.querySelector('#action-message').innerText.includes('restarted')", timeout=90_000)
    except PlaywrightTimeout:
        pytest.fail(f"no 'restarted' within 90 s; the action message says: {page.inner_text('#action-message')!r}")
    journals = sorted((state_dir / "lab" / "deploys").glob("*-dashboard*"))
    assert journals, "the action left no journal"


@pytest.mark.lab_alone  # counts every agent's queries
def test_slurm_sees_at_most_one_queue_query_every_few_seconds(page, lab):
    """Two pages open for 20 s: slurmctld's count of job-queue requests (sdiag's
    REQUEST_JOB_USER_INFO and REQUEST_JOB_INFO: one per squeue) grows by at most
    one every five seconds: the agent asks Slurm once for every page."""
    page2 = page.context.new_page()
    page2.goto(page.url)

    def queue_queries() -> int:
        total = 0
        for line in lab.ssh("login", "sdiag").stdout.splitlines():
            words = line.split()
            if words and words[0] in ("REQUEST_JOB_INFO", "REQUEST_JOB_USER_INFO") and "count:" in line:
                total += int(line.split("count:")[1].split()[0])
        return total

    before, started = queue_queries(), time.monotonic()
    time.sleep(20)
    calls = queue_queries() - before
    elapsed = time.monotonic() - started
    assert calls <= elapsed / 5 + 1, f"{calls} job-queue queries in {elapsed:.0f} s"
    page2.close()
