"""Issue 17: three kinds of worker behind one scheduler, on the closed lab.

The lab declares pools ``hosts`` (node1 and node2 over ssh), ``slurm`` (partition
batch) and ``bigmem`` (partition bigmem: node2 only, which offers the resource
``bigmem``). One pipeline runs a task on each, placed by pool or by resource;
the Slurm pools adapt from zero and go back to it when idle, without touching
the host workers; a running task is never restarted by scaling its pool; a task
asking for what no pool offers fails at once.
"""

from __future__ import annotations

import textwrap
import time

import pytest
import yaml

from toppipe.errors import ToppipeError
from toppipe.pipeline import PipelineError

pytestmark = pytest.mark.lab

#: Where tasks leave one line per start, on the shared filesystem (seen by every node).
STARTS = "/srv/toppipe-lab/shared/pool-test-starts"

PIPELINE = '''
from toppipe.pipeline import task

@task(pool="hosts")
def near():
    return 1

@task(pool="slurm")
def wide(near):
    return near + 1

@task(resources={"bigmem": 1})
def big(wide):
    return wide + 1
'''


def _wait(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        assert time.monotonic() < deadline, f"{what} within {timeout:.0f} s"
        time.sleep(interval)
    return found


def _pool(session, name):
    return next(p for p in session.pools() if p.name == name)


def _host_workers(session) -> dict[str, object]:
    return {w.address: w.since for w in session.workers() if w.pool == "hosts"}


def test_the_lab_has_three_pools_with_their_offers_and_limits(session):
    pools = {p.name: p for p in session.pools()}
    assert list(pools) == ["hosts", "slurm", "bigmem"]
    assert pools["hosts"].kind == "hosts" and pools["hosts"].limits == {"per_host": {"node1": 1, "node2": 1}}
    assert pools["slurm"].limits["partition"] == "batch" and pools["bigmem"].limits["partition"] == "bigmem"
    assert pools["bigmem"].offers == {"bigmem": 1.0} and pools["slurm"].offers == {}
    assert {w.pool for w in session.workers()} == {"hosts"}


def test_one_pipeline_runs_each_task_on_its_pool_and_the_slurm_pools_go_back_to_zero(session, tmp_path, lab):
    hosts_before = _host_workers(session)
    session.adapt(0, 2, pool="slurm")
    session.adapt(0, 1, pool="bigmem")
    source = tmp_path / "three_pools.py"
    source.write_text(textwrap.dedent(PIPELINE))
    run = session.load(source).run(on="hosts", force=True)  # computed, not from an earlier run's cache
    run.wait(timeout=300)
    assert run.result("big") == 3

    def recorded():  # the recorder writes the events in order, a moment after the results are back
        found = {r["name"]: r for r in run.records()}
        return found if all(found.get(t, {}).get("state") == "done" and found[t].get("pool") for t in ("near", "wide", "big")) else None

    records = _wait(recorded, 60, "the records of the three tasks")
    assert records["near"]["pool"] == "hosts" and records["near"]["host"] in ("node1", "node2") and not records["near"]["slurm_job"]
    assert records["wide"]["pool"] == "slurm" and records["wide"]["partition"] == "batch" and records["wide"]["slurm_job"]
    assert records["big"]["pool"] == "bigmem" and records["big"]["partition"] == "bigmem" and records["big"]["host"] == "node2"
    assert records["big"]["slurm_job"] and records["big"]["slurm_job"] != records["wide"]["slurm_job"]
    # idle, each adaptive pool returns to zero: its jobs end, and the host workers were never touched
    _wait(lambda: _pool(session, "slurm").workers == 0 and _pool(session, "bigmem").workers == 0, 120, "Slurm pools back to zero")
    _wait(lambda: not lab.ssh("login", "squeue -h -n toppipe-lab -o %i").stdout.split(), 60, "no Slurm job of the site left")
    assert _host_workers(session) == hosts_before


def test_adapt_switched_off_on_and_off_again_behaves_the_same_each_time(session):
    hosts_before = _host_workers(session)
    client = session.client
    for _ in range(2):
        session.adapt(0, 1, pool="slurm")
        assert _pool(session, "slurm").adaptive == (0, 1)
        future = client.submit(lambda: 1, resources={"pool:slurm": 1}, pure=False)
        assert future.result(timeout=180) == 1  # a job started for the task
        _wait(lambda: _pool(session, "slurm").workers == 0, 120, "the idle Slurm pool back to zero")
        session.stop_adapting(pool="slurm")
        assert _pool(session, "slurm").adaptive is None
    assert _host_workers(session) == hosts_before


def _started(lab, name: str) -> int:
    return len(lab.ssh("node1", f"cat {STARTS}/{name} 2>/dev/null || true").stdout.split())


@pytest.mark.parametrize("pool", ["hosts", "slurm"])
def test_a_running_task_is_never_restarted_while_its_pool_scales_up_and_down(session, lab, pool):
    client = session.client
    start = 2 if pool == "hosts" else 1
    session.scale(start, pool=pool)
    _wait(lambda: _pool(session, pool).workers == start, 180, f"{start} workers in pool {pool}")
    others = {w.address for w in session.workers() if w.pool != pool}
    name, starts = f"{pool}-{time.time_ns()}", STARTS

    def slow(seconds: float) -> str:  # defined here: pickled by value, workers cannot import tests
        import os
        import socket
        import time

        os.makedirs(starts, exist_ok=True)
        with open(f"{starts}/{name}", "a") as handle:
            handle.write(f"{socket.gethostname()}\n")
        time.sleep(seconds)
        return socket.gethostname()

    future = client.submit(slow, 12, resources={f"pool:{pool}": 1}, pure=False)
    _wait(lambda: _started(lab, name) == 1, 60, "the task started")
    session.scale(start + 1, pool=pool)  # up: the new worker joins, the busy one is left alone
    _wait(lambda: _pool(session, pool).workers == start + 1, 180, "the added worker joined")
    session.scale(start, pool=pool)  # down: an idle worker retires, not the task's
    assert future.result(timeout=120)
    assert _started(lab, name) == 1, "the task was started again"
    assert {w.address for w in session.workers() if w.pool != pool} == others, "another pool's workers changed"
    if pool == "hosts":
        session.scale(2, pool="hosts")
    else:
        session.scale(0, pool="slurm")


def test_a_task_no_pool_can_run_fails_at_once_naming_the_pools(session, tmp_path):
    source = tmp_path / "gpu.py"
    source.write_text("from toppipe.pipeline import task\n\n@task(resources={'GPU': 1})\ndef train():\n    return 1\n")
    began = time.monotonic()
    with pytest.raises(PipelineError, match=r"no pool of this site offers GPU=1; its pools: hosts .*slurm .*bigmem \(bigmem=1"):
        session.load(source).run()
    future = session.client.submit(lambda: 1, resources={"GPU": 1}, pure=False)
    with pytest.raises(ValueError, match="no pool of this site offers GPU=1"):
        future.result(timeout=30)
    assert time.monotonic() - began < 30
    with pytest.raises(ToppipeError, match="no pool 'gpu'; its pools: hosts, slurm, bigmem"):
        session.scale(1, pool="gpu")


def test_a_pool_edit_restarts_the_agent_and_the_host_workers_come_back_with_it(site, state_dir, tmp_path, monkeypatch):
    """A changed pool restarts the agent (the scheduler). dask workers end with the scheduler they
    joined: the same ``up`` starts the host workers again once the new scheduler runs (their hosts
    are otherwise converged), its checks pass, and both host workers are in the new scheduler's pool."""
    import toppipe
    from tests.conftest import run_deploy
    from tests.inventory_copies import copy_inventory

    inventory = copy_inventory("lab", tmp_path / "lab")
    settings_file = inventory / "group_vars" / "all.yml"
    data = yaml.safe_load(settings_file.read_text())
    data["toppipe"]["pools"]["bigmem"]["max_jobs"] = 3
    settings_file.write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        changed = run_deploy("up", str(inventory), state_dir=state_dir)
        assert changed.code == 0, changed.stdout + changed.stderr
        assert "  login: full run: " in changed.stdout, changed.stdout
        assert "node1/workers, node2/workers: start again, the scheduler was restarted" in changed.stdout, changed.stdout
        monkeypatch.setenv("TOPPIPE_STATE_DIR", str(state_dir))
        with toppipe.connect("lab") as session:
            assert _pool(session, "bigmem").limits["max_jobs"] == 3  # the new agent
            _wait(lambda: {w.host for w in session.workers() if w.pool == "hosts"} == {"node1", "node2"}, 60,
                  "both host workers joined the new scheduler")  # fmt: skip
    finally:
        restored = run_deploy("up", "inventories/lab", state_dir=state_dir)
        assert restored.code == 0, restored.stdout + restored.stderr
