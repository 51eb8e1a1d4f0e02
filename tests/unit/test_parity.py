"""Environment parity between client, scheduler and workers."""

from __future__ import annotations

import copy

import pytest

from toppipe.parity import mismatches

SAME = {"python": "3.11.7.final.0", "dask": "2026.8.0", "distributed": "2026.8.0", "numpy": "2.4.6", "lz4": None}
VERSIONS = {
    "client": {"packages": dict(SAME)},
    "scheduler": {"packages": dict(SAME, python="3.11.2.final.0")},
    "workers": {"tls://10.0.0.5:4000": {"packages": dict(SAME, python="3.11.2.final.0")}},
}


def test_identical_versions_and_python_patch_levels_agree():
    assert mismatches(VERSIONS) == []


def test_a_worker_with_another_numpy_is_named_with_both_versions():
    versions = copy.deepcopy(VERSIONS)
    versions["workers"]["tls://10.0.0.5:4000"]["packages"]["numpy"] = "2.3.0"
    assert mismatches(versions) == ["numpy: the client has 2.4.6, worker tls://10.0.0.5:4000 has 2.3.0"]


def test_a_scheduler_on_another_python_minor_is_a_mismatch():
    versions = copy.deepcopy(VERSIONS)
    versions["scheduler"]["packages"]["python"] = "3.12.1.final.0"
    assert mismatches(versions) == ["python: the client has 3.11, scheduler has 3.12"]


def test_a_package_missing_somewhere_is_not_a_version_mismatch():
    versions = copy.deepcopy(VERSIONS)
    versions["scheduler"]["packages"].pop("numpy")
    versions["workers"]["tls://10.0.0.5:4000"]["packages"]["lz4"] = None
    assert mismatches(versions) == []


DATAFRAME = {"pandas": "3.1.1", "pyarrow": "22.0.0"}
WORKER = "tls://10.0.0.5:4000"


@pytest.mark.parametrize(
    "client, scheduler, worker, expected",
    [
        (DATAFRAME, {}, DATAFRAME, []),  # the scheduler needs no dataframe packages
        (DATAFRAME, {}, dict(DATAFRAME, pyarrow=None),
         [f"pyarrow: the client has 22.0.0, worker {WORKER} has none (dask's collections need it there)"]),
        (DATAFRAME, {}, dict(DATAFRAME, pyarrow="21.0.0"), [f"pyarrow: the client has 22.0.0, worker {WORKER} has 21.0.0"]),
        (dict(DATAFRAME, pyarrow=None), {}, dict(DATAFRAME, pyarrow=None), []),  # a client without it asks nothing
    ],
)  # fmt: skip
def test_workers_need_what_dasks_collections_import(client, scheduler, worker, expected):
    versions = copy.deepcopy(VERSIONS)
    versions["client"]["packages"].update(client)
    versions["scheduler"]["packages"].update(scheduler)
    versions["workers"][WORKER]["packages"].update(worker)
    assert mismatches(versions) == expected
