"""How the lab inventory (``runtime: apptainer``) turns into container services,
image shipping and data-service settings: pure logic, no host touched."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from deploy import images, lifecycle
from deploy.inventory import load_site
from deploy.resources import Upload
from deploy.state import DATA_SECRETS, site_files
from roles.base import IMAGE_PYTHON
from roles.lsyncd import lsyncd_config
from roles.postgres import hba
from roles.records import records_url
from roles.redis import redis_conf
from roles.scheduler import agent_config

REPO = Path(__file__).resolve().parents[2]
HOME = "/home/toppipe"


class _Homes:
    """Stands in for an engine: the home folder of every ssh host."""

    def home_dirs(self, site):
        return {h.name: HOME for h in site.hosts if not h.is_local}


@pytest.fixture(scope="module")
def lab(tmp_path_factory, lab_inventory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TOPPIPE_STATE_DIR", str(tmp_path_factory.mktemp("state")))
        site = load_site(lab_inventory)
        yield site, lifecycle.contexts(_Homes(), site, site_files(site), {"source": None})


def specs(site, ctxs):
    return {(host, spec.name): spec for host, spec in lifecycle.services(site, ctxs)}


def test_every_lab_service_runs_in_its_image(lab):
    site, ctxs = lab
    found = {key: Path(spec.image).name.rsplit("-", 1)[0] for key, spec in specs(site, ctxs).items() if spec.image}
    assert specs(site, ctxs)[("desktop", "dashboard")].runtime == "native"  # it runs deploy's actions
    assert found == {
        ("db", "postgres"): "postgres", ("db", "redis"): "redis", ("login", "scheduler"): "scheduler",
        ("node1", "workers"): "compute", ("node2", "workers"): "compute",
        ("desktop", "jupyter"): "client", ("desktop", "lsyncd"): "client"
    }  # fmt: skip


def test_host_workers_speak_tls_on_the_node_address_and_keep_their_http_server_on_loopback(lab):
    site, ctxs = lab
    argv = specs(site, ctxs)[("node1", "workers")].argv
    option = {argv[i]: argv[i + 1] for i in range(len(argv) - 1) if argv[i].startswith("--")}
    assert ctxs["node1"].scheduler_address.startswith("tls://")
    assert option["--host"] == "10.213.7.21"
    assert option["--dashboard-address"] == "127.0.0.1:0"  # health/metrics answer anyone: not beyond the host


def test_remote_images_live_on_the_shared_folder_and_the_client_uses_its_cache(lab):
    site, ctxs = lab
    assert ctxs["node1"].images["compute"] == f"/srv/toppipe-lab/shared/lab/images/compute-{images.digest('compute')}.sif"
    assert ctxs["desktop"].images["client"] == str(images.planned("client").path)
    assert ctxs["node1"].python == IMAGE_PYTHON


def test_services_see_the_site_folder_the_shared_folder_and_toppipe_code(lab):
    site, ctxs = lab
    workers = specs(site, ctxs)[("node1", "workers")]
    assert set(workers.binds) == {f"{HOME}/.toppipe/lab", "/srv/toppipe-lab/shared"}
    assert ("PYTHONPATH", f"{HOME}/.toppipe/lab/lib:/srv/toppipe-lab/shared/lab/project") in workers.env
    scheduler = specs(site, ctxs)[("login", "scheduler")]
    assert {"/etc/slurm", "/run/munge"} <= set(scheduler.binds)


def test_each_image_is_sent_once_to_the_shared_folder(lab):
    site, ctxs = lab
    actions = lifecycle.ship_actions(site, ctxs)
    assert all(isinstance(a.resource, Upload) and a.resource.named_by_content for a in actions)
    sent = sorted(Path(a.resource.path).name.rsplit("-", 1)[0] for a in actions)
    assert sent == ["compute", "postgres", "redis", "scheduler"]
    assert {a.resource.path for a in actions} == {ctxs["node1"].images[n] for n in sent}
    assert not [a for a in actions if a.host == "desktop"]  # the client runs images from its own cache


def test_an_unreachable_host_sends_nothing_and_another_host_sends_for_it(lab):
    site, ctxs = lab
    actions = lifecycle.ship_actions(site, ctxs, unreachable={"login": "cannot connect"})
    senders = {Path(a.resource.path).name.rsplit("-", 1)[0]: a.host for a in actions}
    assert "login" not in senders.values()
    assert senders["compute"] in {"node1", "node2"} and senders["scheduler"] == "db"


def test_slurm_workers_run_python_inside_the_compute_image_with_their_job_variables(lab):
    site, ctxs = lab
    python = agent_config(ctxs["login"])["slurm"]["python"]
    words = shlex.split(python.replace('"$(command -v apptainer || command -v singularity)"', "APPTAINER"))
    assert words[:3] == ["APPTAINER", "-s", "exec"] and words[-1] == IMAGE_PYTHON
    assert words[-2] == ctxs["login"].images["compute"]
    assert "--cleanenv" in words and "TOPPIPE_SERVICE=lab/slurm-worker" in words
    assert '--env "SLURM_JOB_ID=${SLURM_JOB_ID:-}"' in python


def test_secrets_reach_only_the_hosts_that_use_them():
    files = {name: b"x" for name in ("tls/ca.pem", "tls/ca.key", "secrets/jupyter_token", *DATA_SECRETS)}
    from deploy.state import SiteFiles

    site_secrets = SiteFiles(files, created=False)
    assert set(site_secrets.for_host(("client",))) == set(files) - {"tls/ca.key"}
    assert set(site_secrets.for_host(("db",))) == {"tls/ca.pem", *DATA_SECRETS}
    assert set(site_secrets.for_host(("scheduler", "slurm"))) == {"tls/ca.pem", *DATA_SECRETS}
    assert set(site_secrets.for_host(("workers",))) == {"tls/ca.pem", "secrets/redis_password"}  # toppipe.store() in tasks


def test_the_records_url_is_postgres_over_verified_tls_with_a_password_file(lab):
    site, ctxs = lab
    url = records_url(ctxs["desktop"])
    assert url.startswith("postgresql://toppipe@10.213.7.11:5432/toppipe?")
    assert "sslmode=verify-full" in url and "passfile=" in url and "password" not in url.split("?")[0]
    assert "secrets%2Fpgpass" in url


def test_postgres_accepts_tls_with_scram_only():
    lines = [line.split() for line in hba(None).decode().splitlines() if line and not line.startswith("#")]
    assert ["hostnossl", "all", "all", "all", "reject"] in lines
    assert all(line[-1] in ("scram-sha-256", "reject") for line in lines)


def test_redis_is_tls_only_with_a_password_and_protected_mode(lab):
    site, ctxs = lab
    conf = dict(line.split(" ", 1) for line in redis_conf(ctxs["db"]).decode().splitlines())
    assert conf["port"] == "0" and conf["tls-port"] == "6379" and conf["bind"] == "10.213.7.11"
    assert conf["protected-mode"] == "yes" and conf["requirepass"] == ctxs["db"].files["secrets/redis_password"].decode()


def test_lsyncd_syncs_the_project_to_the_shared_folder_through_the_login_host(lab, lab_inventory):
    site, ctxs = lab
    config = lsyncd_config(ctxs["desktop"]).decode()
    assert "default.rsyncssh" in config and '"toppipe@10.213.7.10"' in config
    assert '"/srv/toppipe-lab/shared/lab/project"' in config
    assert "delay = 0.3" in config and '".git"' in config and '".venv"' in config
    assert 'StrictHostKeyChecking = "yes"' in config and 'ControlMaster = "auto"' in config
    assert f'"{lab_inventory / "ssh" / "id_ed25519"}"' in config


def test_status_skips_a_journal_that_purge_cut_short(tmp_path, monkeypatch):
    """down --purge removes the site folder while its own journal is being written."""
    from deploy import journal
    from deploy.files import write_json

    monkeypatch.setenv("TOPPIPE_STATE_DIR", str(tmp_path))
    site = load_site(REPO / "inventories" / "local")
    folder = site.state_dir / "deploys"
    (folder / "20260101T000000-1-up").mkdir(parents=True)
    write_json(folder / "20260101T000000-1-up" / "inputs.json", {"command": "up"})
    write_json(folder / "20260101T000000-1-up" / "status.json", {"exit_code": 0})
    (folder / "20260101T000001-2-down").mkdir()
    write_json(folder / "20260101T000001-2-down" / "status.json", {"exit_code": 0})  # its inputs.json is gone
    assert journal.latest(site)["command"] == "up"
