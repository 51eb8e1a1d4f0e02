"""Standard dask on the real local site: ``client.cluster`` is a dask Cluster attached to the
site's scheduler (repr, dashboard link, logs, scale, the sidebar's factory), dask's
collections run on the site's workers, and neither ``cluster.close()`` nor
``client.shutdown()`` stops the site. In a real browser (Debian's Chromium driven by
Playwright), JupyterLab's Dask sidebar lists the site's cluster, scales it, renders the
task stream through Jupyter's proxy, and its trash button leaves the site running."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import time
import urllib.request
from pathlib import Path

import pytest

from tests.browser import chromium
from tests.conftest import deployed

pytestmark = pytest.mark.integration



@pytest.fixture(scope="module")
def site(tmp_path_factory):
    with deployed("inventories/local", tmp_path_factory.mktemp("daskstate")) as state:
        yield state


@pytest.fixture
def session(site, monkeypatch):
    monkeypatch.setenv("TOPPIPE_STATE_DIR", str(site))
    import toppipe

    with toppipe.connect("local") as session:
        session.cluster.wait_for_workers(2, timeout=60)
        yield session


def test_the_clients_cluster_is_a_dask_cluster_on_the_sites_scheduler(session):
    from distributed.deploy import Cluster

    cluster = session.client.cluster
    assert cluster is session.cluster and isinstance(cluster, Cluster)
    assert cluster.scheduler_address == session.record["scheduler"] == session.client.scheduler.address
    assert repr(cluster).startswith("SiteCluster(local, 'tls://127.0.0.1:8786', workers=2, threads=2")
    assert "Workers: 2<" in cluster._scaling_status() and "host workers" in cluster._scaling_status()


def test_the_dashboard_link_is_the_records_and_opens(session):
    link = session.cluster.dashboard_link
    assert link == session.record["dashboard"] == session.client.dashboard_link
    assert link in session.cluster._repr_html_()
    with urllib.request.urlopen(link, timeout=10) as response:
        assert response.status == 200 and b"bokeh" in response.read().lower()


def test_get_logs_has_the_scheduler_and_every_worker(session):
    logs = session.cluster.get_logs()
    workers = set(session.client.scheduler_info(n_workers=-1)["workers"])
    assert workers <= set(logs) and "Scheduler" in logs
    assert "Scheduler at:" in logs["Scheduler"] or "scheduler" in logs["Scheduler"].lower()


def test_dask_collections_run_on_the_sites_workers(session):
    import dask
    import dask.array as da
    import dask.bag as db
    from distributed import as_completed, get_worker

    client = session.client
    assert float(da.ones((2000, 2000), chunks=500).sum().compute()) == 4_000_000.0
    assert db.from_sequence(range(100), npartitions=4).map(lambda x: x * 2).filter(lambda x: x % 3 == 0).sum().compute() == sum(
        x * 2 for x in range(100) if x * 2 % 3 == 0
    )
    total = dask.delayed(sum)([dask.delayed(lambda x: x + 1)(i) for i in range(10)])
    assert total.compute() == 55

    def where(x):
        time.sleep(0.05)
        return x, get_worker().address

    futures = client.map(where, range(40))
    done = [future.result() for future in as_completed(futures)]
    assert sorted(x for x, _ in done) == list(range(40))
    assert {address for _, address in done} == set(client.scheduler_info(n_workers=-1)["workers"])


def test_adapt_says_this_site_has_no_slurm(session):
    from toppipe import ToppipeError

    with pytest.raises(ToppipeError, match="site 'local' has no Slurm.*cluster.scale"):
        session.cluster.adapt(minimum=0, maximum=4)


def test_closing_the_cluster_or_shutting_the_client_down_leaves_the_site_running(site, monkeypatch):
    monkeypatch.setenv("TOPPIPE_STATE_DIR", str(site))
    import toppipe

    session = toppipe.connect("local")
    before = set(session.client.scheduler_info(n_workers=-1)["workers"])
    session.cluster.close()
    session.client.shutdown()  # dask's "shut down the scheduler and workers": here only this connection
    session.close()
    with toppipe.connect("local") as again:
        assert set(again.client.scheduler_info(n_workers=-1)["workers"]) == before  # the same workers, not restarted
        assert again.client.submit(sum, [1, 2]).result() == 3


def test_the_sidebar_factory_waits_for_the_record_then_attaches(site, tmp_path, monkeypatch):
    from toppipe.cluster import SiteCluster, sidebar_cluster

    monkeypatch.setenv("TOPPIPE_STATE_DIR", str(tmp_path))  # no record there yet, as when the first up starts Jupyter

    async def attach():
        waiting = asyncio.ensure_future(sidebar_cluster("local", record_wait=60))
        await asyncio.sleep(1)
        assert not waiting.done()
        (tmp_path / "local").mkdir()
        shutil.copy(site / "local" / "connection.json", tmp_path / "local" / "connection.json")
        cluster = await asyncio.wait_for(waiting, 30)
        try:
            assert isinstance(cluster, SiteCluster) and cluster.asynchronous
            assert len(cluster.scheduler_info["workers"]) == 2
            assert cluster.dashboard_link == json.loads((site / "local" / "connection.json").read_text())["dashboard"]
        finally:
            await cluster.close()
        return cluster

    assert asyncio.run(attach()).status.name == "closed"


def test_the_sidebars_client_code_connects_with_the_sites_tls(session):
    """What the sidebar inserts into a notebook, ``Client("tls://...")``, in Jupyter's settings."""
    import dask
    from distributed import Client

    with dask.config.set({"distributed.client.security-loader": "toppipe.cluster.site_security_loader"}):
        with Client(session.record["scheduler"], set_as_default=False) as client:
            assert client.submit(sum, [3, 4]).result() == 7


def test_the_widgets_scale_button_scales_the_site(session):
    status, scaling = session.cluster._widget().children  # what Jupyter shows for client.cluster
    assert "SiteCluster" in status.value and "host workers" in scaling.children[0].value
    request, scale = scaling.children[1].children[0].children  # "Manual Scaling": workers, Scale
    request.value = 3
    scale.click()
    assert len(session.client.scheduler_info(n_workers=-1)["workers"]) == 3
    assert "Workers: 3<" in scaling.children[0].value
    request.value = 2
    scale.click()


def test_scale_sets_the_host_workers_until_the_next_up(session):
    cluster = session.cluster
    cluster.scale(3)  # returns once the restarted workers are back
    assert len(cluster.scheduler_info["workers"]) == 3
    assert session.client.submit(sum, [2, 2]).result() == 4
    cluster.scale(2)
    assert len(session.client.scheduler_info(n_workers=-1)["workers"]) == 2


def test_the_sidebar_lists_scales_and_trashes_the_sites_cluster_without_stopping_it(site, monkeypatch):
    import dask

    monkeypatch.setenv("TOPPIPE_STATE_DIR", str(site))
    factory = {"module": "toppipe.cluster", "class": "sidebar_cluster", "args": [], "kwargs": {"site": "local"}}

    async def sidebar():
        from dask_labextension.manager import DaskClusterManager

        manager = DaskClusterManager()
        model = await manager.start_cluster(configuration={"name": "local"})
        assert (model["name"], model["workers"]) == ("local", 2)
        assert (await manager.scale_cluster(model["id"], 3))["workers"] == 3
        assert (await manager.scale_cluster(model["id"], 2))["workers"] == 2
        await manager.close_cluster(model["id"])  # the trash button
        assert manager.list_clusters() == []

    with dask.config.set({"labextension.factory": factory, "labextension.initial": []}):
        asyncio.run(sidebar())
    import toppipe

    with toppipe.connect("local") as again:
        assert again.client.submit(sum, [1, 1]).result() == 2


@pytest.fixture
def page(session):
    token = Path(session.record["jupyter_token_file"]).read_text().strip()
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        # a workspace of its own, fresh: nothing restored from an earlier visit
        page.goto(f"{session.record['jupyter']}/workspaces/test-{secrets.token_hex(4)}?reset&token={token}")
        yield page


def workers_now(session) -> int:
    return len(session.client.scheduler_info(n_workers=-1)["workers"])


def open_sidebar(page):
    # JupyterLab may ask at any time whether to rebuild for another package's extension: not ours to answer
    build = page.locator("dialog.jp-Dialog", has_text="Build Recommended")
    page.add_locator_handler(build, lambda dialog: dialog.locator("button.jp-mod-reject").click())
    page.wait_for_selector("#jp-main-dock-panel", timeout=60_000)
    if not page.locator("#dask-dashboard-launcher").is_visible():
        page.locator('.jp-SideBar .lm-TabBar-tab[data-id="dask-dashboard-launcher"]').click()
    return page.locator(".dask-ClusterListingItem", has_text="local")


def test_the_sidebar_lists_scales_shows_the_task_stream_and_trashes_without_stopping_the_site(page, session, tmp_path):
    cluster = open_sidebar(page)
    cluster.wait_for(timeout=60_000)
    # JupyterLab starts beside the workers (issue 19): the listing, refreshed every few seconds, counts them as they join
    page.locator(".dask-ClusterListingItem", has_text="Number of Workers: 2").wait_for(timeout=60_000)

    cluster.locator("button.dask-ClusterListingItem-scale").click()
    dialog = page.locator("dialog.jp-Dialog", has_text="Scale local")
    dialog.locator("input.dask-ScalingInput").first.fill("3")
    dialog.locator("button.jp-mod-accept").click()
    deadline = time.monotonic() + 120
    while workers_now(session) != 3 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert workers_now(session) == 3
    page.locator(".dask-ClusterListingItem", has_text="Number of Workers: 3").wait_for(timeout=30_000)

    # selecting the cluster points the dashboard panes at it (dask-labextension 7.0.0 may clear the pane
    # list it set on load, when its settings arrive after the cluster list)
    cluster.locator(".dask-ClusterListingItem-title").click()
    page.locator('.dask-DashboardListing-item button[value="Task Stream"]').click(timeout=60_000)
    pane = page.frame_locator('iframe[src*="individual-task-stream"]')
    pane.locator("canvas").first.wait_for(timeout=60_000)  # bokeh drew the plot, served through Jupyter's proxy
    page.screenshot(path=str(tmp_path / "dask-sidebar.png"))

    cluster.locator("button.dask-ClusterListingItem-stop").click()
    page.locator(".dask-ClusterListingItem").wait_for(state="detached", timeout=30_000)
    assert workers_now(session) == 3 and session.client.submit(sum, [1, 2]).result() == 3  # the site runs on
    session.cluster.scale(2)


def test_the_history_has_each_hosts_workers_and_the_tasks_done(session):
    session.client.gather(session.client.map(lambda i: i + 1, range(20), pure=False))
    deadline = time.monotonic() + 60
    while not (found := session.history()) or found[-1]["done"] < 20:  # a sample every 10 s
        assert time.monotonic() < deadline, f"no sample counted the 20 tasks: {found[-1:]}"
        time.sleep(1)
    last = found[-1]
    assert last["hosts"]["localhost"]["workers"] == len(last["workers"]) >= 2
    assert all(w["pool"] == "hosts" and w["memory"] > 0 for w in last["workers"].values())
    assert last["slurm"] == {"pending": 0, "running": 0}
