"""The site agent inside a Slurm allocation (``toppipe.agent.placement: allocation``), for sites whose
login nodes forbid services: ``squeue`` shows the agent's job and no process of the site runs on
login; a notebook on the desktop works through the tunnel, which follows the agent to its node
(Slurm and host workers, the example pipeline, a second session reattaching, the records); before
its walltime the agent hands over to a successor job, the run in flight is recorded interrupted,
and the tunnel and a new session reach the successor. ``down`` leaves no job.

A site of its own (ports and shared folder apart from the run's shared lab site), on the closed lab.
"""

from __future__ import annotations

import secrets
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, run_deploy
from tests.interrupted import INTERRUPTIBLE, poll, recorded
from tests.inventory_copies import copy_inventory

pytestmark = pytest.mark.lab

SITE = "labagent"
JOB = f"toppipe-{SITE}-agent"
#: The agent's walltime: it hands over a minute before (toppipe.agent.replacement_margin); the
#: hand-over test deploys a shorter one, which also shows that a changed agent replaces its job.
WALLTIME, SHORT_WALLTIME = "00:10:00", "00:02:30"


@pytest.fixture(scope="module")
def inventory(tmp_path_factory):
    folder = copy_inventory("lab", tmp_path_factory.mktemp("inv") / SITE)
    settings_file = folder / "group_vars" / "all.yml"
    data = yaml.safe_load(settings_file.read_text())
    settings = data["toppipe"]
    settings["site"] = SITE
    settings["ports"] = {**settings.get("ports", {}), "scheduler": 8806, "dashboard": 8807, "jupyter": 8909,
                         "postgres": 5452, "redis": 6399, "app": 8071}  # fmt: skip
    settings["agent"] = {"placement": "allocation", "walltime": WALLTIME, "memory": "1GiB"}
    settings_file.write_text(yaml.safe_dump(data, sort_keys=False))
    return folder


@pytest.fixture(scope="module")
def state(lab, inventory, tmp_path_factory):
    folder = tmp_path_factory.mktemp("agentstate")
    try:  # down also after a failed up: nothing it started may outlive the test
        up = run_deploy("up", str(inventory), state_dir=folder, timeout=900)
        assert up.code == 0, up.stdout + up.stderr
        yield folder
    finally:
        down = run_deploy("down", str(inventory), "--purge", state_dir=folder, timeout=300)
        assert down.code == 0, down.stdout + down.stderr
        assert not agent_jobs(lab), "down left the agent's job"


@pytest.fixture
def session(state, monkeypatch):
    monkeypatch.setenv("TOPPIPE_STATE_DIR", str(state))
    import toppipe

    with toppipe.connect(SITE) as session:
        yield session


def reconnected(session) -> bool:
    """Whether the session reached the site's scheduler again (one attempt of 10 s)."""
    from toppipe.errors import ToppipeError

    try:
        session.reconnect(timeout=10)
    except ToppipeError:
        return False
    return True


def agent_jobs(lab) -> list[tuple[str, str, str]]:
    """The agent's jobs as squeue on login lists them: (id, state, node)."""
    out = lab.ssh("login", f"squeue -h -n {JOB} -o '%i %T %N'").stdout
    return [tuple(line.split()) for line in out.splitlines() if line.strip()]


def site_processes(lab, host: str) -> list[str]:
    """Pids on *host* of any process of the site (marked with TOPPIPE_SERVICE=<site>/...)."""
    out = lab.ssh(host, f"grep -lzxE 'TOPPIPE_SERVICE={SITE}/.*' /proc/[0-9]*/environ 2>/dev/null || true").stdout
    return out.split()


def worker_services(lab) -> list[str]:
    """``host/service`` of each worker service of the site with a process on node1 or node2."""
    found = []
    for host in ("node1", "node2"):
        out = lab.ssh(host, f"cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -E '^TOPPIPE_SERVICE={SITE}/workers' | sort -u || true").stdout
        found += [f"{host}/{line.split('/', 1)[1]}" for line in out.split()]
    return found


def test_the_agent_runs_in_a_slurm_job_and_nothing_of_the_site_runs_on_login(lab, state, inventory):
    jobs = agent_jobs(lab)
    assert len(jobs) == 1 and jobs[0][1] == "RUNNING", jobs
    node = jobs[0][2]
    assert node in ("node1", "node2"), jobs
    assert site_processes(lab, "login") == []
    assert site_processes(lab, node), f"no process of the site on {node}, where its agent's job runs"
    logs = run_deploy("logs", str(inventory), "scheduler", "-n", "200", state_dir=state, timeout=120)
    assert logs.code == 0 and f"(Slurm job {jobs[0][0]}): scheduler at tls://" in logs.stdout, logs.stdout + logs.stderr


def test_a_notebook_works_through_the_tunnel_to_the_agents_node(lab, state, session):
    import toppipe

    assert session.record["reach"] == "tunnel"
    session.scale(1, on="slurm")
    session.wait_for_workers(3, timeout=300)  # one per host (node1, node2) and the Slurm job
    workers = session.workers()
    assert sorted(w.name.split("-")[0] for w in workers if not w.slurm_job) == ["node1", "node2"], workers
    assert len([w for w in workers if w.slurm_job]) == 1, workers

    synced = f"ls {session.record['project']}/data/station-*.csv"  # lsyncd's first pass may still be going
    poll(lambda: lab.ssh("login", synced, check=False).returncode == 0, 120, "the project on the shared folder")
    pipeline = session.load(REPO / "examples" / "pipelines" / "weather.py")
    run = pipeline.run(on="slurm", force=True)
    summary = run.wait(timeout=600).result("summary")
    assert summary["stations"] == 4, summary
    with toppipe.connect(SITE) as second:  # a second notebook reattaches and reads the records
        assert second.run(run.id).wait(timeout=60).result("summary") == summary
        assert any(r["id"] == run.id and r["state"] == "done" for r in second.runs(limit=5))
    session.scale(0, on="slurm")
    session.scale(4, on="hosts")  # host workers find the agent through its scheduler file
    poll(lambda: len([w for w in session.workers() if not w.slurm_job]) == 4, 180, "four host workers")
    # retired workers stay retired: their services end (they start again only for a new agent)
    session.scale(1, on="hosts")
    poll(lambda: len(worker_services(lab)) == 1, 60, "the retired workers' services ended")
    assert len([w for w in session.workers() if not w.slurm_job]) == 1, session.workers()
    session.scale(2, on="hosts")
    token = Path(session.record["app_token_file"]).read_text().strip()
    request = urllib.request.Request(session.record["app"], headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as page:
        assert page.status == 200  # the site dashboard, which reads the site through the tunnel


def test_before_its_walltime_the_agent_hands_over_and_the_run_in_flight_is_recorded_interrupted(lab, state, session, inventory):
    (replaced, _, _), = agent_jobs(lab)
    settings_file = inventory / "group_vars" / "all.yml"
    data = yaml.safe_load(settings_file.read_text())
    data["toppipe"]["agent"]["walltime"] = SHORT_WALLTIME
    settings_file.write_text(yaml.safe_dump(data, sort_keys=False))
    up = run_deploy("up", str(inventory), "--no-check", state_dir=state, timeout=600)
    assert up.code == 0, up.stdout + up.stderr
    (first_job, state_now, _), = agent_jobs(lab)  # the changed agent replaced its job
    assert first_job != replaced and state_now == "RUNNING"

    session.reconnect(timeout=60)
    session.scale(1, on="slurm")
    poll(lambda: [w for w in session.workers() if w.slurm_job], 60, "a Slurm worker of the new agent")
    path = state / "pipelines" / f"handover_{secrets.token_hex(3)}.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text(INTERRUPTIBLE)
    run = session.load(path).run(on="slurm", params={"token": secrets.token_hex(4), "seconds": 600.0})
    poll(lambda: run.status()["slow"] == "running", 60, "slow started")

    def successor_running():
        jobs = agent_jobs(lab)
        return [j for j in jobs if j[0] != first_job and j[1] == "RUNNING" and len(jobs) == 1]

    poll(successor_running, 180, "the agent's successor job running alone")
    poll(lambda: reconnected(session), 120, "a session on the successor")  # through the tunnel, which follows the agent
    assert session.client.scheduler_info()["address"].endswith(":8806")
    (found, tasks) = recorded(session, run.id, "interrupted")
    assert "walltime" in found["error"] and first_job in found["error"], found
    assert tasks["slow"]["state"] == "interrupted", tasks
    assert site_processes(lab, "login") == []
