"""The lab's Ansible role (roles/prepare) in the same ``up`` as toppipe's pyinfra roles.

``inventories/lab`` lists ``prepare`` first, on login, db and the nodes: it
runs through ansible-runner, over the same ssh settings, into the same
journal; a second ``up`` finds every host converged from one probe and does
not run the role (its inputs are unchanged, and the paths it manages are as
it left them); a file it manages removed by hand is drift: ``plan`` sees what
the role would redo and ``up`` runs it again there; a failing Ansible task on
one host fails ``up`` the way a pyinfra operation does while the other hosts
converge.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

from deploy.converged import FAST, RECORD_NAME, ROLE_IN_PLACE
from tests.conftest import REPO, run_deploy

pytestmark = pytest.mark.lab

INVENTORY = "inventories/lab"
PREPARED = ("login", "db", "node1", "node2")
SHARED_SITE = "/srv/toppipe-lab/shared/lab"
RECORD = f".toppipe/lab/{RECORD_NAME}"  # in the home of each ssh host


def _journal_events(state_dir, command: str = "up") -> list[dict]:
    latest = sorted((state_dir / "lab" / "deploys").glob(f"*-{command}"))[-1]
    return [json.loads(line) for line in (latest / "events.jsonl").read_text().splitlines()]


def _prepare_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if " prepare " in line and line.lstrip().startswith("[")]


def test_prepare_ran_through_ansible_on_its_hosts(site, state_dir, lab):
    log = (state_dir / "lab" / "ansible" / "prepare.log").read_text()
    assert "PLAY [toppipe: ansible role prepare]" in log
    assert lab.ssh("node2", f"cat {SHARED_SITE}/README.txt").stdout.startswith('This folder belongs to the toppipe site "lab"')
    assert lab.ssh("login", f"stat -c %a {SHARED_SITE}").stdout.strip().endswith("700")


def test_second_up_finds_the_ansible_role_converged_without_running_it(site, state_dir, lab):
    log = state_dir / "lab" / "ansible" / "prepare.log"
    ran_before = log.stat().st_mtime_ns
    again = run_deploy("up", INVENTORY, "--no-check", "-v", state_dir=state_dir)
    assert again.code == 0, again.stdout + again.stderr
    assert all(f"  {host}: {FAST}" in again.stdout for host in PREPARED), again.stdout
    lines = _prepare_lines(again.stdout)
    assert sorted(line.split()[2] for line in lines) == sorted(PREPARED)  # one line per host: the role, none of its tasks
    assert all("ansible role prepare" in line and line.rstrip().endswith(" ok") for line in lines), "\n".join(lines)
    assert "no changes" in again.stdout, "\n".join(l for l in again.stdout.splitlines() if l.rstrip().endswith(("changed", "FAILED")))
    prepared = [e for e in _journal_events(state_dir) if e["role"] == "prepare"]
    assert sorted(e["host"] for e in prepared) == sorted(PREPARED)
    assert {(e["what"], e["outcome"]) for e in prepared} == {("ansible role prepare", "unchanged")}
    assert all(e["message"].startswith("not run: inputs unchanged, no drift") for e in prepared), prepared
    assert log.stat().st_mtime_ns == ran_before  # ansible-runner did not run the role
    # what the probe looks at: the paths prepare manages, as its last run reported them
    managed = {host: lab.ssh(host, f"tail -n +2 {RECORD}").stdout.splitlines() for host in PREPARED}
    assert any({SHARED_SITE, f"{SHARED_SITE}/README.txt"} <= set(paths) for paths in managed.values()), managed
    # Ansible kept one ssh connection per host for the run and closed them after it
    assert subprocess.run(["pgrep", "-f", "toppipe-ansible-lab-"], capture_output=True).stdout == b""


def test_plan_shows_what_the_ansible_role_would_redo_and_changes_nothing(site, state_dir, lab):
    lab.ssh("node1", f"rm {SHARED_SITE}/README.txt")
    drift = f"ansible role prepare runs: drift: {SHARED_SITE}/README.txt missing"
    plan = run_deploy("plan", INVENTORY, state_dir=state_dir)
    assert plan.code == 0, plan.stdout + plan.stderr
    assert drift in plan.stdout and "prepare    a note on what the folder holds" in plan.stdout, plan.stdout
    assert lab.ssh("node1", f"test -e {SHARED_SITE}/README.txt", check=False).returncode == 1
    up = run_deploy("up", INVENTORY, "--no-check", state_dir=state_dir)
    assert up.code == 0 and drift in up.stdout and "prepare    a note on what the folder holds" in up.stdout, up.stdout
    assert lab.ssh("node2", f"test -e {SHARED_SITE}/README.txt", check=False).returncode == 0
    # the host whose record lists the note (the one that ran its run_once task) ran again, the others did not
    ran = [host for host in PREPARED if f"  {host}: {drift}" in up.stdout]
    assert len(ran) == 1 and all(f"  {host}: {FAST}" in up.stdout for host in PREPARED if host not in ran), up.stdout
    again = run_deploy("up", INVENTORY, "--no-check", state_dir=state_dir)
    assert again.code == 0 and all(f"  {host}: {FAST}" in again.stdout for host in PREPARED), again.stdout


def test_a_host_that_drifted_elsewhere_runs_in_full_without_the_ansible_role(site, state_dir, lab):
    lab.ssh("node2", "echo '# edited by hand' >> .toppipe/lab/etc/dask/toppipe.yaml")
    up = run_deploy("up", INVENTORY, "--no-check", state_dir=state_dir)
    assert up.code == 0, up.stdout + up.stderr
    assert "  node2: full run: file " in up.stdout and f"  node2: ansible role prepare {ROLE_IN_PLACE}" in up.stdout, up.stdout
    prepared = [e for e in _journal_events(state_dir) if e["role"] == "prepare" and e["host"] == "node2"]
    assert [(e["what"], e["message"]) for e in prepared] == [("ansible role prepare", ROLE_IN_PLACE)], prepared
    assert lab.ssh("node2", "grep -c 'edited by hand' .toppipe/lab/etc/dask/toppipe.yaml", check=False).stdout.strip() == "0"


def test_a_failing_ansible_task_fails_its_host_and_the_rest_converge(site, state_dir, tmp_path):
    inventory = tmp_path / "lab"
    shutil.copytree(REPO / INVENTORY, inventory)
    settings_file = inventory / "group_vars" / "all.yml"
    settings = yaml.safe_load(settings_file.read_text())
    settings["toppipe"]["paths"]["project"] = str(REPO / "examples")  # the same project as the lab's
    settings["toppipe"]["roles"].insert(1, {"role": "gpu", "hosts": ["node1"]})
    settings_file.write_text(yaml.safe_dump(settings, sort_keys=False))  # the pools in their order: the agent stays
    tasks = inventory / "roles" / "gpu" / "tasks"
    tasks.mkdir(parents=True)
    (tasks / "main.yml").write_text("- name: a GPU is there\n  ansible.builtin.command: nvidia-smi -L\n")

    failed = run_deploy("up", str(inventory), "--no-check", state_dir=state_dir)
    assert failed.code == 1, failed.stdout + failed.stderr
    assert "failed: node1 gpu: a GPU is there: " in failed.stdout
    assert "nvidia-smi" in failed.stdout.split("failed: node1 gpu: a GPU is there: ", 1)[1].splitlines()[0]
    summary = {line.split()[0]: line.split()[1:] for line in failed.stdout.splitlines() if line.startswith(("node1 ", "node2 "))}
    assert summary["node1"][2] == "1" and summary["node2"][2:] == ["0", "0"]  # failed, skipped columns
    events = _journal_events(state_dir)
    assert {e["outcome"] for e in events if e["host"] == "node1" and e["role"] not in ("prepare", "gpu")} == {"skipped"}

    restored = run_deploy("up", INVENTORY, "--no-check", state_dir=state_dir)
    assert restored.code == 0, restored.stdout + restored.stderr
