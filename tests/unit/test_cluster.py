"""The cluster object's pure parts: the agent's pool report and the widget's Scaling tab."""

from __future__ import annotations

import math

import pytest

from types import SimpleNamespace

from toppipe.agent import Agent
from toppipe.agent_pools import PoolAdaptive, SlurmPool
from toppipe.cluster import PoolState, scaling_status_html


class _SlurmCluster:
    """Only what a Slurm pool reads of the agent's SLURMCluster: its job class, worker specs and scheduler."""

    job_cls = object
    _job_kwargs: dict = {}

    def __init__(self):
        self.worker_spec, self.workers = {}, {}
        self.scheduler = SimpleNamespace(workers={})


COMMON = {"python": "python", "job_name": "toppipe-t", "workdir": "/shared/t/slurm"}


def _agent(jobs: int | None, adaptive: tuple[int, int] | None = None) -> Agent:
    """An agent with no Slurm (*jobs* None), or a Slurm pool of *jobs* jobs, adapting in *adaptive*."""
    agent = Agent({"site": "t"})
    if jobs is not None:
        config = {"name": "slurm", "kind": "slurm", "threads": 1, "memory": "1GiB", "walltime": "00:30:00", "cores": 1}
        pool = SlurmPool(_SlurmCluster(), config, COMMON, "t")
        pool.add(jobs)
        if adaptive:
            pool.adaptive = PoolAdaptive(pool, *adaptive)  # not started: no event loop here
        agent.cluster, agent.pools = pool.cluster, {"slurm": pool}
    return agent


def test_a_site_without_slurm_reports_no_pool():
    assert _agent(None).pool() == {"slurm": False, "target": None, "adaptive": None}


def test_the_slurm_pool_reports_its_target_and_adaptive_range():
    agent = _agent(3, (0, 4))
    assert agent.pool() == {"slurm": True, "target": 3, "adaptive": {"minimum": 0, "maximum": 4}, "pool": "slurm"}
    assert PoolState.from_reply(agent.pool()) == PoolState(True, 3, (0, 4))


def test_stopping_adaptivity_keeps_the_workers_and_reports_manual():
    agent = _agent(2, (1, 8))
    agent.stop_adapting()
    assert agent.pools["slurm"].adaptive is None and len(agent.cluster.worker_spec) == 2
    assert agent.pool()["adaptive"] is None


def test_stopping_adaptivity_without_slurm_says_what_to_do():
    with pytest.raises(ValueError, match="no Slurm pool.*pool='hosts'"):
        _agent(None).stop_adapting()


def test_an_unknown_pool_is_refused_with_the_pools_there_are():
    agent = _agent(1)
    agent.config["pools"] = [{"name": "hosts", "kind": "hosts"}]
    with pytest.raises(ValueError, match="pool 'gpu' is no pool of this site; its Slurm pools: slurm"):
        agent.stop_adapting("gpu")
    with pytest.raises(ValueError, match="'hosts' is a hosts pool"):
        agent.stop_adapting("hosts")


@pytest.mark.parametrize(
    "pool, workers, expected",
    [
        (PoolState(True, 4), 2, ("Pool: Slurm", "Scaling mode: Manual", "Workers: 2 / 4")),
        (PoolState(True, 4), 4, ("Scaling mode: Manual", "Workers: 4<")),
        (PoolState(True, 1, (0, math.inf)), 1, ("Scaling mode: Adaptive (0 to ∞)", "Workers: 1<")),
        (PoolState(True, 0, (0, 4)), 2, ("Adaptive (0 to 4)", "Workers: 2 / 0")),
        (PoolState(False), 2, ("Pool: host workers (no Slurm on this site)", "Workers: 2<")),
        (None, 0, ("Pool: unknown", "Workers: 0<")),
    ],
)
def test_the_scaling_tab_shows_pool_mode_and_workers(pool, workers, expected):
    html = scaling_status_html(pool, workers)
    for part in expected:
        assert part in html, html



def test_the_sidebars_settings_parse_into_the_factory_and_the_initial_cluster(monkeypatch):
    import dask.config

    from roles.jupyter import labextension_env

    for name, value in labextension_env("lab"):
        monkeypatch.setenv(name, value)
    settings = dask.config.collect(paths=[], env=None)["labextension"]
    assert settings["factory"] == {"module": "toppipe.cluster", "class": "sidebar_cluster", "kwargs": {"site": "lab"}}
    assert settings["initial"] == [{"name": "lab"}]
    loader = dask.config.get("distributed.client.security-loader", config=dask.config.collect(paths=[], env=None))
    assert loader == "toppipe.cluster.site_security_loader"


def test_adding_host_workers_of_a_missing_inventory_is_one_line(tmp_path):
    from toppipe import ToppipeError
    from toppipe.host_pools import add_workers

    with pytest.raises(ToppipeError) as caught:
        add_workers({"inventory": str(tmp_path / "gone")}, "hosts", {"node1": [2]})
    assert str(caught.value) == f"{tmp_path / 'gone'}: no such inventory folder; pass a folder like inventories/local"


def test_the_security_loader_gives_a_sites_tls_for_its_scheduler_only(tmp_path, monkeypatch):
    import json

    from toppipe.cluster import site_security_loader

    monkeypatch.setenv("TOPPIPE_STATE_DIR", str(tmp_path))
    tls = {"ca": "/s/ca.pem", "cert": "/s/client.pem", "key": "/s/client.key"}
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "connection.json").write_text(json.dumps({"scheduler": "tls://10.0.0.1:8786", "tls": tls}))
    security = site_security_loader({"address": "tls://10.0.0.1:8786"})
    assert (security.tls_ca_file, security.tls_client_cert, security.require_encryption) == ("/s/ca.pem", "/s/client.pem", True)
    assert site_security_loader({"address": "tls://10.0.0.2:8786"}) is None
