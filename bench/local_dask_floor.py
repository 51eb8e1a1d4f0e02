"""The floor a site's dask pays: a plain ``distributed.LocalCluster`` with worker
processes, mutual TLS from a temporary CA (``require_encryption=True``), and
the site's count of workers, threads and memory. ``bench/pipeline_overhead.py``
measures the site's ``client.map`` against it. A LocalCluster's scheduler runs
in the client's process; :func:`cli_client` is the same cluster as the site
lays it out (``dask scheduler`` and ``dask worker --nanny`` processes, the
same TLS), without anything of toppipe's.

    .venv/bin/python bench/local_dask_floor.py [--workers 2] [--threads 1] [--tasks 10000]

Alone, it prints ``client.map`` on the floor with TLS beside the same cluster
in clear (what TLS costs) and beside the dask CLI cluster.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager


def site_workers(session) -> tuple[int, int, int]:
    """(workers, threads per worker, memory limit in bytes) of the site's workers now."""
    found = list(session.client.scheduler_info(n_workers=-1)["workers"].values())
    if not found:
        raise RuntimeError("the site has no workers")
    return len(found), found[0]["nthreads"], found[0]["memory_limit"]


@contextmanager
def floor_client(workers: int, threads: int, memory: int | str = "auto", tls: bool = True):
    """A client of a fresh LocalCluster (processes, nannies, no dashboards), closed at the end."""
    from distributed import Client, LocalCluster
    from distributed.security import Security

    security = Security.temporary() if tls else None  # (require_encryption=True)
    with LocalCluster(n_workers=workers, threads_per_worker=threads, memory_limit=memory, processes=True,
                      security=security, host="127.0.0.1", dashboard_address=None,
                      worker_dashboard_address=None) as cluster, Client(cluster, security=security) as client:  # fmt: skip
        client.wait_for_workers(workers)
        yield client


@contextmanager
def cli_client(workers: int, threads: int, memory: int | str = "auto"):
    """A client of a scheduler and workers started as the dask CLI starts them, with the same
    temporary-CA TLS as :func:`floor_client`; both stopped at the end."""
    import os
    import subprocess
    import tempfile

    from distributed import Client
    from distributed.security import Security

    security = Security.temporary()
    with tempfile.TemporaryDirectory() as folder:
        pem = {}
        for name, text in (("ca", security.tls_ca_file), ("cert", security.tls_scheduler_cert), ("key", security.tls_scheduler_key)):
            pem[name] = os.path.join(folder, f"{name}.pem")
            with open(pem[name], "w") as out:
                out.write(text)
        tls = ["--tls-ca-file", pem["ca"], "--tls-cert", pem["cert"], "--tls-key", pem["key"]]
        env = {**os.environ, "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True"}
        address = os.path.join(folder, "scheduler.json")
        cli = "distributed.cli"
        started = [subprocess.Popen([sys.executable, "-m", f"{cli}.dask_scheduler", "--protocol", "tls", "--host", "127.0.0.1",
                                     "--port", "0", "--dashboard-address", "127.0.0.1:0", "--scheduler-file", address, *tls],
                                    env=env, stderr=subprocess.DEVNULL)]  # fmt: skip
        try:
            started.append(subprocess.Popen([sys.executable, "-m", f"{cli}.dask_worker", "--scheduler-file", address,
                                             "--nworkers", str(workers), "--nthreads", str(threads), "--memory-limit", str(memory),
                                             "--host", "127.0.0.1", "--nanny", "--no-dashboard", *tls],
                                            env=env, stderr=subprocess.DEVNULL))  # fmt: skip
            deadline = time.monotonic() + 60
            while not os.path.exists(address):
                if time.monotonic() > deadline:
                    raise TimeoutError("the dask scheduler did not start within 60 s")
                time.sleep(0.1)
            with Client(scheduler_file=address, security=security) as client:
                client.wait_for_workers(workers, timeout=60)
                yield client
        finally:
            for process in reversed(started):
                process.terminate()
                process.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tasks", type=int, default=10_000)
    args = parser.parse_args()

    def trivial(i):
        return i + 1

    rows = []
    clusters = (("LocalCluster, TLS", lambda: floor_client(args.workers, args.threads)),
                ("LocalCluster, in clear", lambda: floor_client(args.workers, args.threads, tls=False)),
                ("dask CLI cluster, TLS", lambda: cli_client(args.workers, args.threads)))  # fmt: skip
    for label, cluster in clusters:
        with cluster() as client:
            client.gather(client.map(trivial, range(100), pure=False))  # warm-up
            started = time.perf_counter()
            client.gather(client.map(trivial, range(args.tasks), pure=False))
            rows.append((label, time.perf_counter() - started))
    print(f"{'measure':<26}{'seconds':>9}{'tasks/s':>9}{'ratio':>8}")
    for label, seconds in rows:
        print(f"{label:<26}{seconds:>9.2f}{args.tasks / seconds:>9.0f}{seconds / rows[0][1]:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
