"""Tasks no pool can run fail at once, on a real in-process dask scheduler and worker: through
the ``UnplaceableTasks`` plugin itself, and through the site agent that adds it."""

from __future__ import annotations

import asyncio

import pytest

from toppipe.agent_pools import UnplaceableTasks

#: What each pool's workers offer: the hosts pool has a worker here; bigmem has none now.
OFFERS = {"hosts": {"pool:hosts": 1.0, "host": 1.0}, "bigmem": {"pool:bigmem": 1.0, "slurm": 1.0, "bigmem": 1.0}}
UNPLACEABLE = r"no pool of this site offers GPU=1; its pools: hosts \(host=1\); bigmem \(bigmem=1, "
#: How long a task that no pool offers may take to fail; it fails in milliseconds here.
FAIL_WITHIN = 10
#: How long a task for a pool with no worker now must keep waiting.
HOLD = 2.0


def _inc(x):
    return x + 1


async def _stays_pending(scheduler, future, seconds: float) -> None:
    """Polls until *seconds* have passed: the task waits for a worker all along."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        assert future.status == "pending", future.status
        assert scheduler.tasks[future.key].state == "no-worker", scheduler.tasks[future.key].state
        await asyncio.sleep(0.05)


async def _check_placement(scheduler, client) -> None:
    """GPU: errs with the pools; bigmem: waits (a worker may join); host: runs."""
    gpu = client.submit(_inc, 1, resources={"GPU": 1}, key="needs-gpu")
    bigmem = client.submit(_inc, 2, resources={"bigmem": 1}, key="needs-bigmem")
    host = client.submit(_inc, 3, resources={"host": 1}, key="needs-host")
    with pytest.raises(ValueError, match=UNPLACEABLE):
        await asyncio.wait_for(gpu, FAIL_WITHIN)
    assert await asyncio.wait_for(host, FAIL_WITHIN) == 4
    await _stays_pending(scheduler, bigmem, HOLD)


def test_a_task_no_pool_offers_errs_at_once_and_one_for_an_empty_pool_waits():
    from distributed import Client, Scheduler, Worker

    async def main():
        async with Scheduler(host="127.0.0.1", port=0, dashboard_address=":0") as s:
            # as the agent adds it: add_plugin on a running scheduler calls no start(), so it is given the scheduler
            s.add_plugin(UnplaceableTasks(s, OFFERS))
            async with Worker(s.address, nthreads=1, resources={"pool:hosts": 1, "host": 1}):
                async with Client(s.address, asynchronous=True) as client:
                    await _check_placement(s, client)

    asyncio.run(main())


@pytest.fixture
def site_tls(tmp_path):
    """The site's TLS as dask reads it (a CA, one certificate for 127.0.0.1), as an agent's DASK_CONFIG has it."""
    import dask

    from deploy import tls

    ca = tls.make_ca("t")
    pair = tls.issue(ca, "scheduler", ["127.0.0.1"])
    files = {"ca.pem": ca.cert_pem, "site.pem": pair.cert_pem, "site.key": pair.key_pem}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    roles = {role: {"cert": str(tmp_path / "site.pem"), "key": str(tmp_path / "site.key")} for role in ("scheduler", "worker", "client")}
    config = {"distributed.comm.require-encryption": True, "distributed.comm.tls.ca-file": str(tmp_path / "ca.pem"),
              **{f"distributed.comm.tls.{role}": paths for role, paths in roles.items()}}  # fmt: skip
    with dask.config.set(config):
        yield


def test_the_agent_fails_a_task_no_pool_offers(site_tls):
    """The agent as it starts on a site without Slurm: its scheduler (TLS) with the plugin it adds."""
    from distributed import Client, Worker
    from distributed.security import Security

    from toppipe.agent import Agent

    # as roles.scheduler.agent_config writes them for a site without Slurm: bigmem's host runs no worker now
    pools = [{"name": "hosts", "kind": "hosts", "threads": 1, "memory": "1GiB", "resources": {}, "hosts": {"node1": 1}, "workers": 1},
             {"name": "bigmem", "kind": "hosts", "threads": 1, "memory": "1GiB", "resources": {"bigmem": 1}, "hosts": {"node2": 1},
              "workers": 1}]  # fmt: skip
    agent = Agent({"site": "t", "host": "127.0.0.1", "port": 0, "dashboard": "127.0.0.1:0", "pools": pools})

    async def main():
        await agent.start()
        try:
            security = Security()
            address = agent.scheduler.address
            async with Worker(address, nthreads=1, resources={"pool:hosts": 1, "host": 1}, security=security):
                async with Client(address, asynchronous=True, security=security) as client:
                    await _check_placement(agent.scheduler, client)
        finally:
            await agent.stop()

    asyncio.run(main())
