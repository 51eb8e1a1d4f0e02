"""Pure parts of the site agent and the session: walltimes, Slurm options, warnings."""

from __future__ import annotations

import warnings

import pytest

from toppipe.agent import lifetime_args, seconds, slurm_cluster_options
from toppipe.session import _only_python_patch_differs


@pytest.mark.parametrize(
    "walltime, expected", [("00:30:00", 1800), ("1-00:00:00", 86400), ("10:00", 600), ("2-01:02:03", 176523), ("45", 45)]
)
def test_walltime_seconds(walltime, expected):
    assert seconds(walltime) == expected


def test_workers_retire_before_walltime_with_a_stagger():
    args = lifetime_args("00:30:00")
    lifetime = int(args[args.index("--lifetime") + 1].rstrip("s"))
    stagger = int(args[args.index("--lifetime-stagger") + 1].rstrip("s"))
    assert lifetime + stagger < 1800 and stagger > 0
    short = lifetime_args("00:01:00")
    assert int(short[1].rstrip("s")) + int(short[3].rstrip("s")) < 60


def test_slurm_options_put_logs_and_chdir_on_the_shared_folder():
    config = {
        "site": "lab",
        "slurm": {
            "partition": "batch", "account": None, "walltime": "00:30:00", "cores": 1, "memory": "1GiB",
            "python": "/home/u/.toppipe/lab/venv/bin/python", "job_name": "toppipe-lab", "workdir": "/shared/lab/slurm",
        },
    }  # fmt: skip
    options = slurm_cluster_options(config)
    assert options["log_directory"] == "/shared/lab/slurm/logs"
    assert options["job_extra_directives"] == ["--chdir=/shared/lab/slurm"]
    assert "account" not in options and options["queue"] == "batch"
    assert "export TOPPIPE_SERVICE=lab/slurm-worker" in options["job_script_prologue"]
    assert "--lifetime" in options["worker_extra_args"]


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
