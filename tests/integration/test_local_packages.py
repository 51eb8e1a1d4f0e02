"""A pipeline from a package installed in the local site's environment, on the site's real
workers: it runs, runs again all cached, an edited helper re-runs exactly the tasks that call
it, and an upgrade re-runs the package's tasks and no other.

The package is installed the way an editable install is: its folder (with its ``*.dist-info``)
named by a ``.pth`` file in the environment's site-packages, before the site starts, so the
workers have it on their path; this process puts the folder on its path the same way."""

from __future__ import annotations

import secrets
import sysconfig
import time
from pathlib import Path

import pytest

from tests.conftest import deployed
from tests.installed_package import DEEP, write_dist_info, write_package
from tests.integration.test_local_pipelines import _settled_records

pytestmark = pytest.mark.integration

INVENTORY = "inventories/local"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(package name, its install folder): installed before the site starts, uninstalled after."""
    name = f"probepkg_{secrets.token_hex(4)}"
    folder = tmp_path_factory.mktemp("installed")
    write_package(folder, name)
    write_dist_info(folder, name, "1.0")
    pth = Path(sysconfig.get_paths()["purelib"]) / f"{name}.pth"
    pth.write_text(f"{folder}\n")
    try:
        yield name, folder
    finally:
        pth.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def site(installed, tmp_path_factory):
    with deployed(INVENTORY, tmp_path_factory.mktemp("pkgstate")) as state:
        yield state


@pytest.fixture
def session(site, installed, monkeypatch):
    monkeypatch.setenv("TOPPIPE_STATE_DIR", str(site))
    monkeypatch.syspath_prepend(str(installed[1]))  # what the .pth gives a Python started from now on
    import toppipe

    with toppipe.connect("local") as session:
        session.wait_for_workers(1)
        yield session


def states(session, run) -> dict[str, str]:
    return {r["name"]: r["state"] for r in _settled_records(session, run.id)}


def test_an_installed_package_runs_cached_then_exactly_the_edited_or_upgraded_tasks_again(session, installed):
    name, folder = installed
    pipeline = session.load(f"{name}.pipeline")

    @pipeline.task
    def unrelated():  # a task of the notebook: not the package's
        return 7

    first = pipeline.run(on="hosts").wait(timeout=60)
    assert first.result("total") == 2 * (1 + 2 + 3) + (-1 + 0 + 1) and first.result("unrelated") == 7
    assert set(states(session, first).values()) <= {"done", "cached"}

    again = pipeline.run(on="hosts").wait(timeout=60)
    assert set(states(session, again).values()) == {"cached"}

    time.sleep(0.01)
    (folder / name / "deep.py").write_text(DEEP.replace("x + 1", "x + 10"))  # an editable install's edit
    edited = pipeline.run(on="hosts").wait(timeout=60)
    assert edited.result("total") == 2 * (10 + 11 + 12) + 0, "the workers ran the old helper"
    assert states(session, edited) == {"numbers": "cached", "doubled": "done", "lowered": "cached", "total": "done",
                                       "unrelated": "cached"}  # fmt: skip

    write_dist_info(folder, name, "1.1")  # an upgrade that changes no file the tasks use
    upgraded = pipeline.run(on="hosts").wait(timeout=60)
    assert states(session, upgraded) == {"numbers": "done", "doubled": "done", "lowered": "done", "total": "done",
                                         "unrelated": "cached"}  # fmt: skip


def test_a_module_name_that_does_not_import_is_one_line_naming_it(session):
    from toppipe.pipeline import PipelineError

    with pytest.raises(PipelineError) as error:
        session.load("probepkg_not_installed.pipeline")
    assert "'probepkg_not_installed.pipeline'" in str(error.value) and "\n" not in str(error.value)


def test_another_projects_folder_runs_here_and_is_refused_on_the_workers_in_one_line(session, tmp_path, monkeypatch):
    from toppipe.pipeline import PipelineError

    name = f"otherpkg_{secrets.token_hex(4)}"
    package = write_package(tmp_path / "other-project", name)
    monkeypatch.syspath_prepend(str(package.parent.resolve()))  # (where load puts it: taken off after the test)
    (package / "__init__.py").write_text(f"from {name}.pipeline import numbers, doubled, lowered, total\n")
    pipeline = session.load(str(package))
    with pytest.raises(PipelineError) as refused:
        pipeline.run(on="hosts")
    assert f"from {(tmp_path / 'other-project').resolve()}, a folder outside the project" in str(refused.value)
    assert "\n" not in str(refused.value)
    assert pipeline.run(on="local").wait(timeout=60).result("total") == 2 * (1 + 2 + 3) + (-1 + 0 + 1)
