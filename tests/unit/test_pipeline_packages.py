"""Pipelines from an installed package or another project's folder: loading them by module name
or path, their cache keys (a chain of calls into the package, its version), and the check a
worker makes before it computes with them."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

import cloudpickle
import pytest

from tests.installed_package import DEEP, TASKS, write_dist_info, write_package
from toppipe.pipeline import PipelineError, load, sources
from toppipe.pipeline.execute import TaskCall, TaskFailed, TaskResult, run_task
from toppipe.pipeline.packages import refuse_outside
from toppipe.pipeline.keys import cache_keys

@pytest.fixture
def installed(tmp_path, monkeypatch):
    """(module name of its pipeline, package folder, site folder) of a package installed in a folder of sys.path."""
    name = f"probepkg_{secrets.token_hex(4)}"
    site = tmp_path / "site-packages"
    package = write_package(site, name)
    write_dist_info(site, name, "1.0")
    monkeypatch.syspath_prepend(str(site))
    yield f"{name}.pipeline", package, site
    for loaded in [n for n in sys.modules if n == name or n.startswith(name + ".")]:
        del sys.modules[loaded]


@pytest.fixture
def project(tmp_path) -> Path:
    """A project with a pipeline of its own that uses none of the package."""
    folder = tmp_path / "project"
    (folder / "pipelines").mkdir(parents=True)
    (folder / "pipelines" / "own.py").write_text("from toppipe.pipeline import task\n\n@task\ndef alone():\n    return 1\n")
    return folder


def keys_of(pipeline, project: Path) -> dict[str, str]:
    return cache_keys(pipeline, pipeline.order(), {}, str(project))


def test_a_pipeline_loads_by_module_name_and_keys_on_the_modules_it_calls_into(installed, project):
    module, package, _ = installed
    pipeline = load(module, project=project)
    assert pipeline.order() == TASKS and pipeline.name == module
    top = module.partition(".")[0]
    uses = sources.modules_used(pipeline.tasks["doubled"].func, str(project))
    assert [u.name for u in uses] == [f"{top}.deep", f"{top}.helpers", top, module]  # the chain, dependencies first
    assert {(u.kind, u.distribution, u.version) for u in uses} == {("package", top, "1.0")}
    assert uses[0].path == str((package / "deep.py").resolve())
    in_repo = sources.modules_used(pipeline.tasks["doubled"].func, str(Path(__file__).parents[2]))
    assert in_repo == uses  # toppipe is never followed, even in a project that holds it (the local site's)


def test_an_edited_helper_deep_in_the_package_rekeys_exactly_the_tasks_that_call_it(installed, project):
    module, package, _ = installed
    own = load("own", project=project)
    before, own_before = keys_of(load(module, project=project), project), keys_of(own, project)
    (package / "deep.py").write_text(DEEP.replace("x + 1", "x + 2"))
    after = keys_of(load(module, project=project), project)
    assert {name for name in before if before[name] != after[name]} == {"doubled", "total"}
    assert keys_of(own, project) == own_before


def test_an_upgrade_without_a_changed_file_rekeys_the_package_tasks_and_no_other(installed, project):
    module, _, site = installed
    pipeline, own = load(module, project=project), load("own", project=project)
    before, own_before = keys_of(pipeline, project), keys_of(own, project)
    assert keys_of(pipeline, project) == before  # nothing changed: the same keys (all cached)
    write_dist_info(site, module.partition(".")[0], "1.1")
    after = keys_of(pipeline.refreshed(), project)
    assert all(before[name] != after[name] for name in before)
    assert keys_of(own, project) == own_before


def test_an_unimportable_module_name_is_one_line_naming_it(project):
    with pytest.raises(PipelineError) as error:
        load("probepkg_nowhere.pipeline", project=project)
    message = str(error.value)
    assert "'probepkg_nowhere.pipeline'" in message and "install its package" in message and "\n" not in message


def test_a_module_that_fails_to_import_names_its_file_and_line(installed, project):
    module, package, _ = installed
    (package / "helpers.py").write_text("def f(x):\n    return x\n\nraise RuntimeError('broken helper')\n")
    with pytest.raises(PipelineError, match=r"failed to load: .*helpers.py, line 4: RuntimeError: broken helper; fix it"):
        load(module, project=project)


def call_of(func, key: str, uses) -> TaskCall:
    return TaskCall(run="r", task=func.__name__, payload=cloudpickle.dumps(func), key=key, uses=uses)


def test_a_worker_reloads_an_edited_package_module_before_computing(installed, project):
    module, package, _ = installed
    func = load(module, project=project).tasks["doubled"].func
    uses = sources.modules_used(func, str(project))
    assert run_task(call_of(func, "a" * 32, uses), numbers=_given([1, 2])).value == [4, 6]
    (package / "deep.py").write_text(DEEP.replace("x + 1", "x + 10"))
    edited = sources.modules_used(func, str(project))  # what the client keys a run on now
    assert run_task(call_of(func, "b" * 32, edited), numbers=_given([1, 2])).value == [22, 24]


def test_a_worker_with_another_version_or_other_files_fails_the_task_in_one_line(installed, project):
    module, package, site = installed
    func = load(module, project=project).tasks["doubled"].func
    uses = sources.modules_used(func, str(project))
    top = module.partition(".")[0]
    write_dist_info(site, top, "2.0")
    with pytest.raises(TaskFailed, match=rf"package {top} is 2.0 on .*, the run was keyed on {top} 1.0 .*install {top}==1.0"):
        run_task(call_of(func, "c" * 32, uses), numbers=_given([1]))
    write_dist_info(site, top, "1.0")
    (package / "deep.py").write_text(DEEP.replace("x + 1", "x + 3"))
    with pytest.raises(TaskFailed) as failure:
        run_task(call_of(func, "d" * 32, uses), numbers=_given([1]))
    assert failure.value.error.startswith(f"module {top}.deep ({package / 'deep.py'} on ")
    assert "\n" not in failure.value.error and not failure.value.remote_traceback


def test_another_projects_package_folder_loads_runs_here_and_is_refused_on_the_workers_in_one_line(tmp_path, project):
    name = f"otherpkg_{secrets.token_hex(4)}"
    other = tmp_path / "other-project"
    package = write_package(other, name)
    try:
        (package / "__init__.py").write_text(f"from {name}.pipeline import numbers, doubled, lowered, total\n")
        pipeline = load(str(package), project=project)  # the folder of a package: imported, its tasks by reference
        assert pipeline.order() == TASKS and pipeline.module == name
        func = pipeline.tasks["doubled"].func
        uses = sources.modules_used(func, str(project))
        assert {u.kind for u in uses} == {"outside"}
        with pytest.raises(PipelineError) as refused:
            refuse_outside("doubled", uses)
        assert str(refused.value).startswith(f"task doubled uses {name}.") and f"from {other.resolve()}, a folder outside" in str(refused.value)
        assert "\n" not in str(refused.value)
        before = keys_of(pipeline, project)
        (package / "deep.py").write_text(DEEP.replace("x + 1", "x + 5"))
        assert {n for n, k in keys_of(pipeline.refreshed(), project).items() if before[n] != k} == {"doubled", "total"}
    finally:
        sys.path.remove(str(other.resolve()))
        for loaded in [n for n in sys.modules if n == name or n.startswith(name + ".")]:
            del sys.modules[loaded]


def _given(value) -> TaskResult:
    return TaskResult(value, "k" * 32)
