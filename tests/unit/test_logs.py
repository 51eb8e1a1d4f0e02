"""Log targets (a service, host/service, a worker, a Slurm job), the tail commands and the rotation at start."""

from __future__ import annotations

import subprocess

import pytest

from deploy import UserError
from deploy.inventory import load_site
from deploy.logs import LogTarget, Worker, is_job_id, resolve, slurm_job_log, tail_command, targets
from deploy.resources import ServiceSpec
from deploy.runtime.shell import open_log


def spec(name: str, host: str) -> ServiceSpec:
    return ServiceSpec(site="lab", name=name, argv=("true",), rundir=f"/home/{host}/site/services/{name}", workdir="/")


SERVICES = [
    ("login", spec("scheduler", "login")),
    ("node1", spec("workers", "node1")),
    ("node2", spec("workers", "node2")),
]
WORKERS = [
    Worker("node1-0", "tls://10.213.7.21:40001", "node1"),
    Worker("slurm-3", "tls://10.213.7.30:40002", "c1", slurm_job="4242"),
]


def slurm_log(job: str) -> tuple[str, str]:
    return "login", f"/shared/lab/slurm/logs/toppipe-lab-{job}.err"


def test_a_service_on_one_host_is_named_alone_or_with_its_host():
    assert resolve("scheduler", SERVICES) == LogTarget("login/scheduler", "login", "/home/login/site/services/scheduler/log")
    assert resolve("login/scheduler", SERVICES) == resolve("scheduler", SERVICES)
    assert resolve("node2/workers", SERVICES).path == "/home/node2/site/services/workers/log"


def test_a_service_on_several_hosts_needs_its_host():
    with pytest.raises(UserError, match="workers runs on 2 hosts; name one: node1/workers, node2/workers"):
        resolve("workers", SERVICES)


def test_a_worker_by_name_or_address_is_its_hosts_workers_log():
    assert resolve("node1-0", SERVICES, WORKERS).label == "node1/workers"
    assert resolve("tls://10.213.7.21:40001", SERVICES, WORKERS).label == "node1/workers"


def test_a_slurm_worker_and_a_job_id_are_the_jobs_output():
    assert resolve("slurm-3", SERVICES, WORKERS, slurm_log) == LogTarget("worker slurm-3", "login", "/shared/lab/slurm/logs/toppipe-lab-4242.err")
    assert resolve("4343", SERVICES, WORKERS, slurm_log).path.endswith("/toppipe-lab-4343.err")
    assert resolve("4343_2", SERVICES, (), slurm_log).label == "slurm job 4343_2"


def test_a_bad_target_is_one_line_naming_the_known_ones():
    with pytest.raises(UserError) as caught:
        resolve("schedular", SERVICES, WORKERS, slurm_log)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("no log named 'schedular'; known targets: scheduler, login/scheduler, node1/workers, node2/workers")
    assert message.endswith("a worker's name or address, a Slurm job id")


def test_a_job_id_without_slurm_is_a_bad_target():
    with pytest.raises(UserError, match="no log named '4343'") as caught:
        resolve("4343", SERVICES)
    assert "Slurm" not in str(caught.value)


def test_job_ids():
    assert is_job_id("123") and is_job_id("123_4")
    assert not is_job_id("node1-0") and not is_job_id("12a") and not is_job_id("123_") and not is_job_id("")


def test_targets_lists_services_alone_when_unambiguous_then_by_host():
    assert targets(SERVICES) == ["scheduler", "login/scheduler", "node1/workers", "node2/workers"]


def test_slurm_job_output_is_in_the_agents_slurm_folder_on_the_shared_filesystem(lab_inventory):
    site = load_site(lab_inventory)
    assert slurm_job_log(site, "/home/toppipe/.toppipe/lab", "77") == f"{site.settings.paths.shared}/{site.name}/slurm/logs/toppipe-{site.name}-77.err"


def test_tail_reads_the_last_lines_and_says_when_there_is_no_log(tmp_path):
    log = tmp_path / "log"
    log.write_text("".join(f"line {i}\n" for i in range(10)))
    done = subprocess.run(["bash", "-c", tail_command(str(log), 3)], capture_output=True, text=True, timeout=10)
    assert done.stdout.splitlines() == ["line 7", "line 8", "line 9"]
    missing = subprocess.run(["bash", "-c", tail_command(str(tmp_path / "none"), 3)], capture_output=True, text=True, timeout=10)
    assert missing.returncode == 3 and "no log yet at" in missing.stderr
    with pytest.raises(UserError, match="-n must be 0 or more"):
        tail_command(str(log), -1)


def test_a_log_over_the_limit_is_moved_aside_at_start_and_a_small_one_kept(tmp_path):
    script = f'd={tmp_path}\n{open_log(limit=100)}\necho started >> "$log"'
    (tmp_path / "log").write_text("x" * 50 + "\n")
    subprocess.run(["bash", "-c", script], check=True, timeout=10)
    assert (tmp_path / "log").read_text() == "x" * 50 + "\nstarted\n" and not (tmp_path / "log.1").exists()
    (tmp_path / "log").write_text("y" * 200 + "\n")
    (tmp_path / "log.1").write_text("older\n")
    subprocess.run(["bash", "-c", script], check=True, timeout=10)
    assert (tmp_path / "log").read_text() == "started\n"
    assert (tmp_path / "log.1").read_text() == "y" * 200 + "\n"  # the one before is dropped
    assert oct((tmp_path / "log").stat().st_mode & 0o777) == "0o600"
