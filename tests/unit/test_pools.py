"""Worker pools (issue 17), their pure parts: loading ``toppipe.pools``, the services of hosts
pools, scaling a hosts pool (``host_pools.plan``), matching tasks to pools (``fits``), the
``@task(pool=, resources=)`` arguments and a run's placement. The scheduler-side parts with a
real dask scheduler are in ``test_pool_scheduler.py``, an adaptive pool's arithmetic in
``test_pool_adaptive.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.inventory import load_site
from deploy.inventory.model import Pool
from roles.base import HostContext
from roles.workers import EXTRA_PER_HOST, WorkersRole
from tests.unit.test_inventory import HOSTS, SETTINGS, write_inventory
from toppipe.pool_resources import fits, unplaceable_message
from toppipe.errors import ToppipeError
from toppipe.host_pools import added_index, plan
from toppipe.pipeline import Pipeline, PipelineError, task
from toppipe.pipeline.launch import placement

WITH_SLURM = HOSTS + "    slurm:\n      hosts:\n        localhost:\n"
SLURM_SETTINGS = SETTINGS + """\
  slurm:
    partition: batch
    walltime: "02:00:00"
    cores: 4
    memory: 8GiB
    max_jobs: 6
"""


def site_with_pools(folder: Path, pools: str, hosts: str = WITH_SLURM):
    """The site of an inventory whose ``toppipe.pools`` is *pools* (YAML lines indented 4)."""
    return load_site(write_inventory(folder, hosts, **{"group_vars/all": SLURM_SETTINGS + "  pools:\n" + pools}))


# --- loading pools ---------------------------------------------------------------------------


def test_written_pools_keep_their_order_and_take_unwritten_keys_from_workers_and_slurm(tmp_path):
    site = site_with_pools(tmp_path / "inv", """\
    bigmem: {kind: slurm, partition: bigmem, memory: 64GiB, max_jobs: 2, resources: {bigmem: 1}}
    desks: {kind: hosts, hosts: workers, per_host: 1, threads: 2, resources: {GPU: 1}}
    cpu: {kind: slurm, cores: 8, processes: 2, gres: "gpu:a100:2", job_directives: [--exclusive], local_scratch: true}
""")  # fmt: skip
    assert [p.name for p in site.pools] == ["bigmem", "desks", "cpu"]
    bigmem, desks, cpu = site.pools
    assert (bigmem.kind, bigmem.partition, bigmem.memory, bigmem.max_jobs) == ("slurm", "bigmem", "64GiB", 2)
    assert (bigmem.walltime, bigmem.cores, bigmem.threads) == ("02:00:00", 4, 4)  # from toppipe.slurm
    assert bigmem.resources == (("bigmem", 1.0),)
    assert (desks.kind, desks.threads, desks.memory, desks.hosts) == ("hosts", 2, "2GiB", (("node1", 1), ("node2", 1)))
    assert desks.resources == (("GPU", 1.0),)
    assert (cpu.partition, cpu.memory, cpu.max_jobs) == ("batch", "8GiB", 6)  # from toppipe.slurm
    assert (cpu.cores, cpu.processes, cpu.threads) == (8, 2, 4)  # threads per worker: cores / processes
    assert (cpu.gres, cpu.job_directives, cpu.local_scratch) == ("gpu:a100:2", ("--exclusive",), True)
    assert site.slurm_pools == (bigmem, cpu) and site.pool("desks") is desks


def test_a_hosts_pool_without_per_host_takes_each_hosts_toppipe_workers(tmp_path):
    hosts = WITH_SLURM.replace("    node2:\n      ansible_host: 10.0.0.12\n", "    node2:\n      ansible_host: 10.0.0.12\n      toppipe_workers: 5\n")
    site = site_with_pools(tmp_path / "inv", "    desks: {kind: hosts, hosts: [node2, workers]}\n", hosts)
    assert site.pool("desks").hosts == (("node2", 5), ("node1", 3))  # written order, each host once


def test_without_pools_a_site_has_the_default_hosts_pool_and_no_slurm_pool_without_a_slurm_group(tmp_path):
    hosts = HOSTS.replace("    node1:\n      ansible_host: 10.0.0.11\n", "    node1:\n      ansible_host: 10.0.0.11\n      toppipe_workers: 1\n")
    site = load_site(write_inventory(tmp_path / "inv", hosts))
    assert [p.name for p in site.pools] == ["hosts"]
    pool = site.pools[0]
    assert (pool.kind, pool.threads, pool.memory) == ("hosts", site.settings.workers.threads, site.settings.workers.memory)
    assert pool.hosts == (("node1", 1), ("node2", 3))  # the workers group, with each host's toppipe_workers
    assert site.slurm_pools == ()


def test_without_pools_a_site_with_a_slurm_group_also_has_the_default_slurm_pool(tmp_path):
    site = load_site(write_inventory(tmp_path / "inv", WITH_SLURM, **{"group_vars/all": SLURM_SETTINGS}))
    assert [p.name for p in site.pools] == ["hosts", "slurm"]
    slurm = site.pool("slurm")
    assert (slurm.kind, slurm.partition, slurm.walltime, slurm.cores, slurm.threads, slurm.memory, slurm.max_jobs) == (
        "slurm", "batch", "02:00:00", 4, 4, "8GiB", 6)  # fmt: skip
    assert slurm.resources == () and slurm.processes == 1


@pytest.fixture(scope="module")
def lab_site(tmp_path_factory, lab_inventory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TOPPIPE_STATE_DIR", str(tmp_path_factory.mktemp("state")))
        yield load_site(lab_inventory)


def test_the_lab_has_hosts_slurm_and_bigmem_and_only_bigmem_offers_bigmem(lab_site):
    assert [(p.name, p.kind) for p in lab_site.pools] == [("hosts", "hosts"), ("slurm", "slurm"), ("bigmem", "slurm")]
    bigmem = lab_site.pool("bigmem")
    assert dict(bigmem.resources) == {"bigmem": 1}
    assert (bigmem.partition, bigmem.constraint, bigmem.max_jobs) == ("bigmem", "bigmem", 2)
    assert lab_site.pool("slurm").partition == "batch" and lab_site.pool("hosts").hosts == (("node1", 1), ("node2", 1))
    assert [p.name for p in lab_site.pools if p.resources] == ["bigmem"]


def test_a_worker_offers_its_pool_and_kind_per_thread_and_the_pools_own_resources():
    slurm = Pool(name="bigmem", kind="slurm", threads=2, memory="4GiB", resources=(("bigmem", 1.0),))
    hosts = Pool(name="desks", kind="hosts", threads=3, memory="1GiB", resources=(("GPU", 1.0), ("vram", 16.0)))
    assert slurm.worker_resources() == {"pool:bigmem": 2.0, "slurm": 2.0, "bigmem": 1.0}
    assert hosts.worker_resources() == {"pool:desks": 3.0, "host": 3.0, "GPU": 1.0, "vram": 16.0}
    assert slurm.marker == "pool:bigmem"


# --- the services of hosts pools -------------------------------------------------------------


def _context(site, host: str) -> HostContext:
    return HostContext(site=site, host=site.host(host), root="/srv/toppipe/test", python="python3", files={})


def _options(argv) -> dict[str, str]:
    return {argv[i]: argv[i + 1] for i in range(len(argv) - 1) if argv[i].startswith("--")}


def test_a_second_hosts_pool_is_a_service_of_its_own_with_its_pool_and_resources(tmp_path):
    site = site_with_pools(tmp_path / "inv", """\
    hosts: {kind: hosts, hosts: [workers]}
    gpu: {kind: hosts, hosts: [node1], per_host: 1, threads: 2, memory: 3GiB, resources: {GPU: 1}}
""")  # fmt: skip
    role = WorkersRole()
    node1 = {spec.name: spec for spec in role.services(_context(site, "node1"))}
    node2 = {spec.name: spec for spec in role.services(_context(site, "node2"))}
    assert list(node1) == ["workers", "workers-gpu"] and list(node2) == ["workers"]
    default, gpu = _options(node1["workers"].argv), _options(node1["workers-gpu"].argv)
    assert (default["--nworkers"], default["--nthreads"], default["--name"]) == ("3", "1", "node1")
    assert default["--resources"].split() == ["pool:hosts=1", "host=1"]
    assert (gpu["--nworkers"], gpu["--nthreads"], gpu["--memory-limit"], gpu["--name"]) == ("1", "2", "3GiB", "node1-gpu")
    assert gpu["--resources"].split() == ["pool:gpu=2", "host=2", "GPU=1"]
    assert ("TOPPIPE_POOL", "gpu") in node1["workers-gpu"].env and ("TOPPIPE_POOL", "hosts") in node1["workers"].env
    assert ("TOPPIPE_HOST", "node1") in node1["workers-gpu"].env


def test_down_stops_the_workers_scale_may_have_added_to_each_pool(tmp_path):
    site = site_with_pools(tmp_path / "inv", """\
    hosts: {kind: hosts, hosts: [workers]}
    gpu: {kind: hosts, hosts: [node1], per_host: 1}
""")  # fmt: skip
    ctx = _context(site, "node1")
    stopped = {r.spec.name for r in WorkersRole().down(ctx)}
    added = {f"workers.{k}" for k in range(4, 4 + EXTRA_PER_HOST)} | {f"workers-gpu.{k}" for k in range(2, 2 + EXTRA_PER_HOST)}
    assert added <= stopped and {"workers", "workers-gpu"} <= stopped
    extra = {spec.name: _options(spec.argv) for spec in WorkersRole().extra_services(ctx, site.pool("gpu"))}
    assert extra["workers-gpu.2"]["--nworkers"] == "1" and extra["workers-gpu.2"]["--name"] == "node1-gpu.2"


# --- scaling a hosts pool: host_pools.plan ----------------------------------------------------


def worker(host: str, name: str, busy: int = 0) -> dict:
    return {"host": host, "name": name, "address": f"tls://{name}", "processing": busy}


def test_added_workers_are_known_by_their_index():
    assert added_index("node1.3") == 3 and added_index("node1-gpu.12") == 12
    assert added_index("node1") is None and added_index("node1-0") is None and added_index("node1-gpu-1") is None


def test_scaling_down_retires_idle_workers_first_from_the_host_with_the_most():
    workers = [worker("node1", "node1-0", busy=1), worker("node1", "node1-1"), worker("node1", "node1-2"), worker("node2", "node2")]
    retire, added = plan(workers, {"node1": 3, "node2": 1}, 3, EXTRA_PER_HOST)
    assert retire == ["tls://node1-1"] and added == {}
    retire, _ = plan(workers, {"node1": 3, "node2": 1}, 2, EXTRA_PER_HOST)
    assert retire == ["tls://node1-1", "tls://node1-2"]  # node1 still has the most after the first
    retire, _ = plan(workers, {"node1": 3, "node2": 1}, 1, EXTRA_PER_HOST)
    assert sorted(retire) == ["tls://node1-1", "tls://node1-2", "tls://node2"]  # the busy one stays


def test_scaling_down_retires_added_workers_before_the_inventorys():
    workers = [worker("node1", "node1-0"), worker("node1", "node1-1"), worker("node1", "node1.3")]
    assert plan(workers, {"node1": 2}, 2, EXTRA_PER_HOST) == (["tls://node1.3"], {})


def test_scaling_down_evenly_takes_from_both_hosts():
    workers = [worker("node1", "node1-0"), worker("node1", "node1-1"), worker("node2", "node2-0"), worker("node2", "node2-1")]
    retire, _ = plan(workers, {"node1": 2, "node2": 2}, 2, EXTRA_PER_HOST)
    assert sorted(w.split("//")[1].split("-")[0] for w in retire) == ["node1", "node2"]


def test_scaling_down_retires_an_idle_worker_of_another_host_before_a_busy_one():
    workers = [worker("node1", "node1-0", busy=1), worker("node1", "node1-1", busy=1), worker("node2", "node2")]
    assert plan(workers, {"node1": 2, "node2": 1}, 2, EXTRA_PER_HOST) == (["tls://node2"], {})


def test_scaling_up_adds_indices_after_the_inventorys_count_and_skips_used_ones():
    workers = [worker("node1", "node1-0"), worker("node1", "node1-1"), worker("node1", "node1.3"),
               worker("node2", "node2-0"), worker("node2", "node2-1")]  # fmt: skip
    retire, added = plan(workers, {"node1": 2, "node2": 2}, 7, EXTRA_PER_HOST)
    assert retire == [] and added == {"node2": [3], "node1": [4]}  # the host with fewest first; node1.3 runs
    _, added = plan(workers, {"node1": 2, "node2": 2}, 5, EXTRA_PER_HOST)
    assert added == {}


def test_scaling_up_beyond_the_added_workers_a_host_may_run_says_what_to_do():
    workers = [worker("node1", "node1")]
    assert plan(workers, {"node1": 1}, 3, 2) == ([], {"node1": [2, 3]})
    with pytest.raises(ToppipeError, match=r"a hosts pool of 1 host\(s\) runs at most 3 workers here; raise per_host in the inventory"):
        plan(workers, {"node1": 1}, 4, 2)


# --- matching tasks to pools -----------------------------------------------------------------

OFFERS = {
    "hosts": {"pool:hosts": 1.0, "host": 1.0},
    "bigmem": {"pool:bigmem": 1.0, "slurm": 1.0, "bigmem": 1.0},
    "plain": {"pool:plain": 1.0},
}


@pytest.mark.parametrize(
    ("asked", "offer", "expected"),
    [
        (None, {}, True),
        ({}, {"host": 1.0}, True),
        ({"GPU": 1}, {"GPU": 1.0, "host": 1.0}, True),
        ({"GPU": 2}, {"GPU": 1.0}, False),
        ({"GPU": 1}, {"host": 1.0}, False),
        ({"pool:bigmem": 1, "bigmem": 1}, OFFERS["bigmem"], True),
        ({"pool:bigmem": 1}, OFFERS["hosts"], False),
    ],
)
def test_a_task_fits_a_worker_offering_at_least_what_it_asks(asked, offer, expected):
    assert fits(asked, offer) is expected


def test_the_unplaceable_message_names_what_was_asked_and_every_pool_with_its_offer():
    message = unplaceable_message({"GPU": 1, "vram": 16}, OFFERS)
    assert message == "no pool of this site offers GPU=1, vram=16; its pools: hosts (host=1); bigmem (bigmem=1, slurm=1); plain (nothing)"


def test_a_task_needs_its_resources_and_its_pools_marker():
    @task(pool="bigmem", resources={"GPU": 1, "vram": 2.5})
    def heavy():
        return 1

    @task
    def light():
        return 2

    tasks = Pipeline("p", [heavy, light]).tasks
    assert tasks["heavy"].needs == {"GPU": 1.0, "vram": 2.5, "pool:bigmem": 1.0}
    assert tasks["heavy"].pool == "bigmem" and tasks["heavy"].resources == (("GPU", 1.0), ("vram", 2.5))
    assert tasks["light"].needs == {}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"resources": {"GPU": 0}}, "resources= maps resource names to amounts above 0"),
        ({"resources": {"GPU": -1}}, "resources= maps resource names to amounts above 0"),
        ({"resources": {"GPU": True}}, "resources= maps resource names to amounts above 0"),
        ({"resources": ["GPU"]}, "resources= maps resource names to amounts above 0"),
        ({"resources": {"": 1}}, "resources= maps resource names to amounts above 0"),
        ({"pool": 3}, "pool= takes the name of one of the site's pools"),
        ({"pool": ""}, "pool= takes the name of one of the site's pools"),
    ],
)
def test_bad_pool_and_resources_arguments_are_refused_when_declared(kwargs, message):
    with pytest.raises(PipelineError, match=message):
        task(**kwargs)


def test_pipeline_task_passes_pool_and_resources_on():
    pipeline = Pipeline("p")

    @pipeline.task(pool="gpu", resources={"GPU": 1})
    def model():
        return 1

    assert pipeline.tasks["model"].needs == {"GPU": 1.0, "pool:gpu": 1.0}


# --- a run's placement -----------------------------------------------------------------------


class _Session:
    """What placement reads of a session: the agent's pools."""

    site = "test"

    def _call(self, name):
        assert name == "toppipe_pools"
        return [{"name": name, "offer": offer} for name, offer in OFFERS.items()]


def _placement_pipeline() -> Pipeline:
    @task(resources={"bigmem": 1})
    def big():
        return 1

    @task
    def small(big):
        return big

    return Pipeline("p", [big, small])


def test_each_task_asks_for_its_own_needs_else_the_runs_placement():
    pipeline = _placement_pipeline()
    assert placement(_Session(), pipeline, ["big", "small"], "hosts") == {"big": {"bigmem": 1.0}, "small": {"host": 1}}
    assert placement(_Session(), pipeline, ["big", "small"], "bigmem") == {"big": {"bigmem": 1.0}, "small": {"pool:bigmem": 1}}


def test_a_task_no_pool_fits_fails_before_anything_is_submitted():
    @task(resources={"GPU": 1})
    def model():
        return 1

    with pytest.raises(PipelineError, match=r"task 'model': no pool of this site offers GPU=1; its pools: hosts \(host=1\); bigmem"):
        placement(_Session(), Pipeline("p", [model]), ["model"], "hosts")


def test_a_run_on_no_pool_names_the_pools():
    with pytest.raises(PipelineError, match=r"run\(on='gpu'\): choose 'hosts', 'slurm', 'local' or a pool of site test: hosts, bigmem, plain"):
        placement(_Session(), _placement_pipeline(), ["big", "small"], "gpu")


def test_a_run_on_slurm_fits_a_site_whose_only_slurm_pool_is_special():
    assert placement(_Session(), _placement_pipeline(), ["small"], "slurm") == {"small": {"slurm": 1}}

