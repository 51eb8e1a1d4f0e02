"""A map watched on the real local site, grouped by task: ``run.summary()`` and
``run.elements()`` from the site's record store (also after ``session.run(id)``), and the
dashboard served by ``up`` in a real browser (Chromium through Playwright): the run page's
counts by state, the drill-down into a map's elements, and the failed elements with their
inputs and remote traceback."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest

from tests.browser import chromium
from tests.conftest import deployed

pytestmark = pytest.mark.integration

INVENTORY = "inventories/local"
ELEMENTS = 120
FAILING = [7, 47, 87]  # the elements whose number % 40 == 7


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    with deployed(INVENTORY, tmp_path_factory.mktemp("summarystate")) as state:
        yield state


@pytest.fixture(scope="module")
def session(site):
    import os

    os.environ["TOPPIPE_STATE_DIR"] = str(site)
    import toppipe

    with toppipe.connect("local") as session:
        session.wait_for_workers(1)
        yield session
    del os.environ["TOPPIPE_STATE_DIR"]


@pytest.fixture(scope="module")
def run(session, tmp_path_factory):
    """A run of numbers -> checked (a map of ELEMENTS, FAILING fail and are left out) -> total, settled."""
    path = tmp_path_factory.mktemp("summary") / "pipelines" / "watched.py"
    path.parent.mkdir(parents=True)
    path.write_text(textwrap.dedent(f"""
        from toppipe.pipeline import task

        @task
        def numbers(n={ELEMENTS}):
            return list(range(n))

        @task(map="numbers", on_error="continue")
        def checked(numbers):
            if numbers % 40 == 7:
                raise ValueError(f"bad number {{numbers}}")
            return numbers * 2

        @task
        def total(checked):
            return sum(checked)
        """))
    run = session.load(path).run(on="hosts", force=True)
    assert run.wait(timeout=120).result("total") == sum(2 * i for i in range(ELEMENTS) if i not in FAILING)
    return run


def settled_summary(run, timeout: float = 30):
    """The run's summary once the records have every element settled. The agent writes in batches,
    and events of different workers arrive in any order: the last task can be recorded done while
    an element's own end is a batch away (CI saw it on a busy machine)."""
    deadline = time.monotonic() + timeout
    while True:
        found = run.summary()
        checked = found["checked"]
        settled = checked.recorded("done") + checked.recorded("failed") == ELEMENTS
        if settled and found["total"].state == "done" or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_the_summary_counts_a_map_s_elements_by_state(run):
    found = settled_summary(run)
    assert [row.task for row in found] == ["numbers", "checked", "total"]
    assert found["checked"].counts == {"done": ELEMENTS - len(FAILING), "failed": len(FAILING)}
    assert found["checked"].elements == ELEMENTS and found["numbers"].counts == {"done": 1}


def test_the_drill_down_pages_through_the_elements_with_the_failed_inputs_and_tracebacks(run):
    settled_summary(run)
    failed = run.elements("checked", state="failed")
    assert [e["index"] for e in failed] == FAILING
    assert all(e["inputs"].startswith(f"numbers={i}") and f"ValueError: bad number {i}" in e["traceback"]
               for e, i in zip(failed, FAILING))  # fmt: skip
    assert [e["index"] for e in run.elements("checked", limit=50, offset=100)] == list(range(100, ELEMENTS))
    assert all(e["host"] and e["state"] == "done" for e in run.elements("checked", limit=5))


def test_a_reattached_run_has_the_same_summary(run, session):
    again = session.run(run.id)
    assert again.tasks == ["numbers", "checked", "total"]
    assert settled_summary(again)["checked"].counts == settled_summary(run)["checked"].counts
    assert [e["index"] for e in again.elements("checked", state="failed")] == FAILING


def test_an_unknown_task_or_state_is_one_line(run):
    from toppipe.errors import ToppipeError

    with pytest.raises(ToppipeError, match="has no task 'nope'"):
        run.elements("nope")
    with pytest.raises(ToppipeError, match="choose one of done, cached"):
        run.elements("checked", state="finished")


@pytest.fixture
def page(site):
    record = json.loads((site / "local" / "connection.json").read_text())
    url, token = record["app"], Path(record["app_token_file"]).read_text().strip()
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{url}?token={token}")
        yield page, url


def text_of(selector: str) -> str:
    return f"(document.querySelector({json.dumps(selector)}) || {{innerText: ''}}).innerText"


def test_the_run_page_groups_the_map_and_drills_into_its_elements(page, run, tmp_path):
    page, url = page
    settled_summary(run)
    page.goto(f"{url}runs/{run.id}")
    row = "#task-checked"
    page.wait_for_function(f"{text_of(row)}.includes('done {ELEMENTS - len(FAILING)}')", timeout=30_000)
    assert f"failed {len(FAILING)}" in page.inner_text(row)
    assert page.locator("#run-tasks tbody tr").count() == 3  # the tasks, not their elements
    page.wait_for_function("document.querySelector('#run-graph')._cyreg.cy.nodes().length === 3", timeout=30_000)  # three boxes

    failures = page.inner_text("#run-failures")
    assert f"Failures ({len(FAILING)})" in failures
    for i in FAILING:
        assert f"checked[{i}]" in failures and f"ValueError: bad number {i}" in failures
        assert page.inner_text(f"[id='inputs-checked[{i}]']").startswith(f"numbers={i}")

    info = "#run-elements-info"
    page.wait_for_function(f"{text_of(info)} === 'checked: elements 1-50 of {ELEMENTS}'", timeout=30_000)
    page.click("#run-elements-next")
    page.wait_for_function(f"{text_of(info)} === 'checked: elements 51-100 of {ELEMENTS}'", timeout=30_000)
    assert "element-checked[50]" in page.inner_html("#run-elements-table")

    page.click(f"{row} a.drill-failed")
    page.wait_for_function(f"{text_of(info)} === 'checked: failed elements 1-{len(FAILING)} of {len(FAILING)}'", timeout=30_000)
    table = page.inner_text("#run-elements-table")
    assert all(f"numbers={i}" in table and f"ValueError: bad number {i}" in table for i in FAILING)
    page.screenshot(path=str(tmp_path / "run-elements.png"))
