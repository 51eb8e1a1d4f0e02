"""session.fs and session.store on the local site, with its real workers: the folder view
holds the project (read by pandas) and the result cache (a run's cached result read back);
the local site runs no Redis, which the notebook and a task are told in one line."""

from __future__ import annotations

import textwrap

import cloudpickle
import pandas as pd
import pytest
import yaml

from tests.conftest import deployed
from tests.integration.test_local_pipelines import _settled_records, session  # noqa: F401 - its session on this module's site
from tests.inventory_copies import copy_inventory
from toppipe.errors import ToppipeError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    folder = tmp_path_factory.mktemp("project")
    (folder / "data").mkdir()
    (folder / "data" / "x.csv").write_text("city,rain\nBergen,2250\nOslo,763\n")
    (folder / "pipelines").mkdir()
    (folder / "pipelines" / "probe.py").write_text(textwrap.dedent("""
        from toppipe.pipeline import task

        @task
        def summary():
            return {"rows": 2, "wettest": "Bergen"}
        """))
    return folder


@pytest.fixture(scope="module")
def site(project, tmp_path_factory):
    inventory = copy_inventory("local", tmp_path_factory.mktemp("inventory") / "local")
    settings_file = inventory / "group_vars" / "all.yml"
    settings = yaml.safe_load(settings_file.read_text())
    settings["toppipe"]["paths"]["project"] = str(project)
    settings_file.write_text(yaml.safe_dump(settings, sort_keys=False))
    with deployed(str(inventory), tmp_path_factory.mktemp("storefs-state")) as state:
        yield state


def test_the_local_sites_folder_holds_the_project_for_pandas_and_a_runs_cached_result(session):
    frame = pd.read_csv(session.fs.open("project/data/x.csv"))
    assert frame["rain"].tolist() == [2250, 763]

    run = session.load("probe").run(on="hosts").wait(timeout=60)
    (row,) = _settled_records(session, run.id)
    key = row["cache_key"]  # the result key (toppipe.pipeline.cache)
    assert session.fs.ls("", detail=False) == ["project", "results"]
    assert f"results/{key[:2]}/{key}.pkl" in session.fs.ls(f"results/{key[:2]}", detail=False)
    assert cloudpickle.loads(session.fs.cat(f"results/{key[:2]}/{key}.pkl")) == {"rows": 2, "wettest": "Bergen"}


def test_the_local_site_has_no_redis_which_the_notebook_and_a_task_are_told_in_one_line(session):
    import toppipe

    with pytest.raises(ToppipeError, match="site local runs no Redis") as raised:
        session.store
    assert "\n" not in str(raised.value)
    with pytest.raises(ToppipeError, match="site local runs no Redis"):  # from the worker's dask configuration
        session.client.submit(toppipe.store, pure=False).result(timeout=30)
