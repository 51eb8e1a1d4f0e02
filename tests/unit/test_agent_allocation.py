"""The site agent inside a Slurm allocation (``toppipe.agent.placement: allocation``): the inventory
rules, what the scheduler host keeps (a job, no service), the job script, the tunnel that follows
the agent, the host workers' scheduler file, and the hand-over before the walltime. Pure logic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from deploy import lifecycle
from deploy.inventory import InventoryError, load_site
from deploy.resources import Ensure, File, Service
from deploy.state import site_files
from roles import tunnel
from roles.scheduler import SchedulerRole, agent_config
from roles.scheduler import allocation
from roles.tunnel import follow
from roles.workers import WorkersRole
from tests.inventory_copies import copy_lab_with_stand_in_keys
from toppipe import agent



class _Homes:
    def home_dirs(self, site):
        return {h.name: "/home/toppipe" for h in site.hosts if not h.is_local}


@pytest.fixture(autouse=True)
def _state(tmp_path, monkeypatch):
    monkeypatch.setenv("TOPPIPE_STATE_DIR", str(tmp_path / "state"))


def _lab(tmp_path: Path, **agent_settings) -> Path:
    folder = copy_lab_with_stand_in_keys(tmp_path / "lab")
    file = folder / "group_vars" / "all.yml"
    settings = yaml.safe_load(file.read_text())
    settings["toppipe"]["agent"] = {"placement": "allocation", **agent_settings}
    file.write_text(yaml.safe_dump(settings, sort_keys=False))
    return folder


def _contexts(site):
    return lifecycle.contexts(_Homes(), site, site_files(site), {"source": None})


def test_the_scheduler_host_keeps_a_job_and_no_service(tmp_path):
    site = load_site(_lab(tmp_path, walltime="02:00:00", memory="1GiB"))
    login = _contexts(site)["login"]
    role = SchedulerRole()
    assert role.services(login) == []
    wanted = role.up(login)
    assert not [r for r in wanted if isinstance(r, Service)]
    files = {r.path: r for r in wanted if isinstance(r, File)}
    root = "/srv/toppipe-lab/shared/lab/agent"
    assert {f"{root}/etc/agent.yaml", f"{root}/agent.sbatch", f"{root}/tls/scheduler.key", f"{root}/secrets/pgpass"} <= set(files)
    assert files[f"{root}/tls/scheduler.key"].secret
    job = [r for r in wanted if isinstance(r, Ensure) and "agent job" in r.name]
    assert len(job) == 1 and "sbatch --parsable --comment=" in job[0].apply and "toppipe.agent_check" in job[0].apply
    down = role.down(login)
    assert any(isinstance(r, Ensure) and "no agent job toppipe-lab-agent left" == r.name for r in down)


def test_the_agent_reads_its_files_on_the_shared_filesystem_and_listens_on_its_node(tmp_path):
    site = load_site(_lab(tmp_path, walltime="02:00:00"))
    config = agent_config(_contexts(site)["login"])
    root = "/srv/toppipe-lab/shared/lab/agent"
    assert config["host"] == "0.0.0.0"
    assert config["scheduler_file"] == f"{root}/scheduler.json"
    assert f"sslrootcert={root.replace('/', '%2F')}%2Ftls%2Fca.pem" in config["records"]
    assert config["allocation"] == {"walltime": 7200, "script": f"{root}/agent.sbatch", "reach": "10.213.7.10"}
    assert f"DASK_CONFIG={root}/etc/dask" in config["slurm"]["python"]  # Slurm workers read the agent's TLS settings


def test_the_job_script_asks_for_the_agent_settings_and_falls_back_to_slurms(tmp_path):
    site = load_site(_lab(tmp_path, walltime="1-00:00:00", memory="1536MiB"))
    script = allocation.job_script(_contexts(site)["login"], "python -m toppipe.agent x.yaml")
    assert "#SBATCH --job-name=toppipe-lab-agent" in script
    assert "#SBATCH --time=1-00:00:00" in script and "#SBATCH --mem=1536M" in script
    assert "#SBATCH --partition=batch" in script  # slurm.partition
    assert script.rstrip().endswith("exec python -m toppipe.agent x.yaml")


def test_the_job_check_holds_only_when_every_agent_job_carries_the_digest(tmp_path):
    import subprocess

    site = load_site(_lab(tmp_path))
    check = allocation.job_check(site, "abc123")
    for listed, holds in (("abc123", True), ("abc123\nabc123", True), ("", False), ("old999", False), ("abc123\nold999", False)):
        fake = f'squeue() {{ printf "%b" {json.dumps(listed)}; }}; '
        done = subprocess.run(["bash", "-c", fake + check])
        assert (done.returncode == 0) is holds, listed


def test_an_allocation_needs_slurm_on_the_scheduler_host_a_shared_folder_and_the_tunnel(tmp_path):
    folder = _lab(tmp_path)
    hosts = yaml.safe_load((folder / "hosts.yml").read_text())
    hosts["all"]["children"]["slurm"] = {"hosts": {"node1": None}}
    (folder / "hosts.yml").write_text(yaml.safe_dump(hosts))
    with pytest.raises(InventoryError, match=r"toppipe.agent.placement: allocation needs Slurm on the scheduler host login"):
        load_site(folder)
    folder = _lab(tmp_path / "b")
    file = folder / "group_vars" / "all.yml"
    settings = yaml.safe_load(file.read_text())
    del settings["toppipe"]["paths"]["shared"]
    file.write_text(yaml.safe_dump(settings))
    with pytest.raises(InventoryError, match="needs a shared filesystem"):
        load_site(folder)
    with pytest.raises(InventoryError, match="placement"):
        load_site(_lab(tmp_path / "c", placement="login"))


def test_the_tunnel_follows_the_agent_to_its_node_through_the_login_node(tmp_path):
    site = load_site(_lab(tmp_path))
    client = _contexts(site)["desktop"]
    (spec,) = tunnel.TunnelRole().services(client)
    assert spec.argv[1:3] == ("-m", "roles.tunnel.follow")
    config = {**tunnel.follow_config(client), "control": "/tmp/x/ssh"}
    argv = follow.node_argv(config, "10.213.7.21")
    assert argv[-2:] == ["toppipe@10.213.7.21", tunnel.HOLD_COMMAND] and argv[1] == "-tt"
    assert "ProxyJump=toppipe@10.213.7.10" in argv
    assert "127.0.0.1:18786:127.0.0.1:8786" in argv  # the scheduler on the agent's node
    assert "127.0.0.1:15432:10.213.7.11:5432" in argv  # PostgreSQL as the node reaches it
    assert follow.login_read_argv(config)[-3:] == ["toppipe@10.213.7.10", "cat", "/srv/toppipe-lab/shared/lab/agent/scheduler.json"]
    assert follow.node_of(json.dumps({"address": "tls://10.213.7.22:8786"})) == "10.213.7.22"
    assert follow.node_of("") is None


def test_host_workers_find_the_agent_through_its_scheduler_file_and_start_again_when_it_moves(tmp_path):
    site = load_site(_lab(tmp_path))
    (spec,) = WorkersRole().services(_contexts(site)["node1"])
    scheduler_file = "/srv/toppipe-lab/shared/lab/agent/scheduler.json"
    assert spec.argv[1:4] == ("-m", "toppipe.follow_scheduler", scheduler_file)
    assert spec.argv[spec.argv.index("--scheduler-file") + 1] == scheduler_file
    assert spec.argv[-2:] == ("--death-timeout", "60")


def test_the_agent_hands_over_a_margin_before_its_walltime():
    assert agent.replacement_margin(120) == 60 and agent.replacement_margin(86400) == 900
    assert agent.hand_over_in({"walltime": 7200}, started=1000.0, now=1000.0) == 7200 - 720
    assert agent.hand_over_in({"walltime": 120}, started=1000.0, now=5000.0) == 0


def test_check_says_whether_an_agent_job_runs():
    from deploy.checks import probes
    from deploy.checks.hosts import Section

    running = probes.judge_agent_job("login", Section(0, "41 RUNNING node2\n42 PENDING \n"))
    assert running.ok and running.detail == "job 41 on node2"
    waiting = probes.judge_agent_job("login", Section(0, "42 PENDING \n"))
    assert not waiting.ok and "42 pending" in waiting.detail and "python -m deploy up" in waiting.detail
    assert not probes.judge_agent_job("login", Section(0, "")).ok


def test_the_scheduler_log_of_an_agent_in_an_allocation_is_its_newest_jobs_output(tmp_path):
    from deploy import logs

    site = load_site(_lab(tmp_path))
    found = logs.locate(None, site, "scheduler")
    assert (found.host, found.path) == ("login", "/srv/toppipe-lab/shared/lab/agent/logs/agent.log")
    script = allocation.job_script(_contexts(site)["login"], "true")
    assert 'ln -sfn "agent-$SLURM_JOB_ID.log" /srv/toppipe-lab/shared/lab/agent/logs/agent.log' in script
