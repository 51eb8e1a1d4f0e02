"""Pure parts of the site agent and the session: walltimes, Slurm options, warnings."""

from __future__ import annotations

import time
import warnings

import pytest

from toppipe.agent import slurm_cluster_options
from toppipe.rotation import walltime_seconds
from toppipe.rotation import SlurmWorker, due, margin_seconds
from toppipe.session import _only_python_patch_differs


@pytest.mark.parametrize(
    "walltime, expected", [("00:30:00", 1800), ("1-00:00:00", 86400), ("10:00", 600), ("2-01:02:03", 176523), ("45", 45)]
)
def test_walltime_seconds(walltime, expected):
    assert walltime_seconds(walltime) == expected


def test_the_oldest_worker_past_the_margin_rotates_first():
    workers = [SlurmWorker("a", "tls://a", 100.0), SlurmWorker("b", "tls://b", 50.0), SlurmWorker("c", "tls://c", 900.0)]
    walltime = 600
    assert margin_seconds(walltime) == 120
    assert due(workers, walltime, now=50.0 + 479) is None
    assert due(workers, walltime, now=50.0 + 480).name == "b"
    assert due(workers, walltime, now=1000.0).name == "b"  # a is due too; b is older
    assert due([], walltime, now=1e9) is None


def test_margin_leaves_time_for_a_replacement_even_on_short_walltimes():
    assert margin_seconds(90) == 30 and margin_seconds(3600) == 720


def _config(**pool) -> dict:
    slurm_pool = {"name": "slurm", "kind": "slurm", "threads": 1, "memory": "1GiB", "partition": "batch", "account": None,
                  "walltime": "00:30:00", "cores": 1, **pool}  # fmt: skip
    return {
        "site": "lab",
        "slurm": {"python": "/home/u/.toppipe/lab/venv/bin/python", "job_name": "toppipe-lab", "workdir": "/shared/lab/slurm"},
        "pools": [{"name": "hosts", "kind": "hosts", "threads": 1, "memory": "1GiB", "workers": 2}, slurm_pool],
    }


def test_slurm_options_put_logs_and_chdir_on_the_shared_folder():
    options = slurm_cluster_options(_config())
    assert options["log_directory"] == "/shared/lab/slurm/logs"
    assert options["job_extra_directives"] == ["--chdir=/shared/lab/slurm"]
    assert "account" not in options and options["queue"] == "batch"
    assert "export TOPPIPE_SERVICE=lab/slurm-worker" in options["job_script_prologue"]
    assert options["worker_extra_args"] == ["--resources", "pool:slurm=1,slurm=1", "--no-dashboard", "--dashboard-address", "127.0.0.1:0"]


def test_a_pools_job_asks_slurm_for_its_gres_constraint_and_qos_and_offers_its_resources():
    config = _config(name="gpu", partition="gpu", cores=4, processes=2, threads=2, gres="gpu:1", constraint="a100",
                     qos="short", job_directives=["--exclusive"], resources={"GPU": 1}, local_scratch=True)  # fmt: skip
    options = slurm_cluster_options(config)
    assert options["job_extra_directives"] == ["--chdir=/shared/lab/slurm", "--qos=short", "--gres=gpu:1", "--constraint=a100", "--exclusive"]
    assert options["worker_extra_args"][:2] == ["--resources", "pool:gpu=2,slurm=2,GPU=1"]
    assert options["processes"] == 2 and options["cores"] == 4 and options["local_directory"] == "$TMPDIR"


def _warning(text: str) -> warnings.WarningMessage:
    category = type("VersionMismatchWarning", (UserWarning,), {})
    return warnings.WarningMessage(category(text), category, "f.py", 1)


def test_a_python_patch_difference_is_not_a_mismatch():
    table = "Mismatched versions found\n+--+\n| Package | Client | Scheduler |\n| python  | 3.11.7.final.0 | 3.11.2.final.0 |\n"
    assert _only_python_patch_differs(_warning(table))
    minor = table.replace("3.11.2", "3.12.1")
    assert not _only_python_patch_differs(_warning(minor))
    package = table + "| numpy | 2.4.6 | 2.3.0 |\n"
    assert not _only_python_patch_differs(_warning(package))


_RUNS: list[int] = []


def _counted_slow(i: int) -> int:
    _RUNS.append(i)
    time.sleep(1.0)
    return i * i


def test_a_retired_worker_finishes_the_tasks_it_runs_and_none_is_computed_twice():
    """Rotation's retire: a real scheduler and two in-process workers; the retired worker's running
    task finishes there (counted once), its result survives it, and it closes."""
    import asyncio

    from distributed import Client, Scheduler, Worker

    from toppipe.rotation import retire

    async def main():
        _RUNS.clear()
        async with Scheduler(host="127.0.0.1", port=0, dashboard_address=":0") as s:
            async with Worker(s.address, nthreads=1) as old, Worker(s.address, nthreads=1) as peer:
                async with Client(s.address, asynchronous=True) as client:
                    future = client.submit(_counted_slow, 7, workers=[old.address], allow_other_workers=True)
                    while not s.workers[old.address].processing:
                        await asyncio.sleep(0.01)
                    await asyncio.sleep(0.2)  # it runs now
                    await retire(s, old.address, drain_timeout=10)
                    assert old.address not in s.workers and peer.address in s.workers
                    assert await future == 49
        return list(_RUNS)

    assert asyncio.run(main()) == [7]
