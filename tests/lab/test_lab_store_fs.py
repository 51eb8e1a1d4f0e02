"""session.store and session.fs on the lab, from the desktop (which reaches only login's sshd):
the notebook and a task on a worker share the site's Redis (TLS through the tunnel, the site
CA checked, the password required); session.fs lists and reads a run's cached result in the
shared folder over SFTP to login, and pandas reads a file there."""

from __future__ import annotations

import secrets

import cloudpickle
import pandas as pd
import pytest

pytestmark = pytest.mark.lab


def test_the_notebook_and_a_task_share_the_sites_redis(lab, session):
    def _in_task(key: str) -> str | None:  # defined here so that it ships by value, not by module name
        """On a worker: what the notebook left under *key*, and a count of the tasks that looked."""
        import toppipe

        store = toppipe.store()
        store.incr(f"{key}:seen")
        return store.get(key)

    session.wait_for_workers(1, timeout=120)
    key = f"probe:{secrets.token_hex(4)}"
    session.store.set(key, "from-notebook", ex=600)
    assert session.client.submit(_in_task, key, pure=False).result(timeout=120) == "from-notebook"
    assert session.store.get(f"{key}:seen") == "1"
    session.store.delete(key, f"{key}:seen")


def test_redis_refuses_a_client_without_the_password_plain_text_and_another_ca(lab, session, tmp_path):
    import redis

    from deploy import tls
    from toppipe import site_store

    settings = site_store.from_record(session.record)
    verified = {"host": settings.host, "port": settings.port, "ssl": True, "ssl_ca_certs": settings.ca,
                "ssl_cert_reqs": "required", "socket_connect_timeout": 10}  # fmt: skip
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(**verified).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(**verified, password="not-the-password").ping()
    with pytest.raises(redis.ConnectionError):
        redis.Redis(host=settings.host, port=settings.port, password=open(settings.password_file).read().strip(),
                    socket_connect_timeout=10).ping()  # fmt: skip
    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_bytes(tls.make_ca("other").cert_pem)
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        redis.Redis(**{**verified, "ssl_ca_certs": str(other_ca)}).ping()


def test_session_fs_lists_and_reads_a_runs_cached_result_and_pandas_reads_a_shared_file(lab, session, tmp_path):
    from tests.integration.test_local_pipelines import _settled_records

    session.wait_for_workers(1, timeout=120)
    token = secrets.token_hex(4)
    path = tmp_path / "pipelines" / f"fs_probe_{token}.py"
    path.parent.mkdir()
    path.write_text(f"from toppipe.pipeline import task\n\n@task\ndef summary():\n    return {{'token': {token!r}}}\n")
    run = session.load(path).run(on="hosts").wait(timeout=300)
    (row,) = _settled_records(session, run.id, timeout=60)
    key = row["cache_key"]  # the result key (toppipe.pipeline.cache)
    assert f"results/{key[:2]}/{key}.pkl" in session.fs.ls(f"results/{key[:2]}", detail=False)
    assert cloudpickle.loads(session.fs.cat(f"results/{key[:2]}/{key}.pkl")) == {"token": token}

    scratch = f"fs-probe-{token}.csv"  # beside project/ (which lsyncd mirrors from the desktop)
    session.fs.pipe(scratch, b"city,rain\nBergen,2250\n")
    try:
        assert pd.read_csv(session.fs.open(scratch))["rain"].tolist() == [2250]
    finally:
        session.fs.rm(scratch)
    assert {"project", "results"} <= set(session.fs.ls("", detail=False))  # rooted at <shared>/lab
