"""The exposure scan: with the lab site up and Slurm workers running, every
listening TCP socket on every lab host (and the desktop's, of the site's own
services) is listed as root inside the host, and each one beyond loopback is
probed without credentials (deploy.checks.exposure): from this machine, or
on the closed lab from login, over its ssh forwards, as from inside a real
site (the desktop's own from here in both). Each
must refuse: mutual TLS, a password, an SSH key, or, for Slurm's own
daemons, munge (proven below by a request signed with another munge key).
"""

from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from deploy.checks.exposure import LISTING_SCRIPT, Exposure, Listener, SshForwards, direct, parse_listing, probe
from tests.conftest import run_deploy
from tests.lab.conftest import run_lab

pytestmark = [pytest.mark.lab, pytest.mark.lab_alone]  # scans what every site listens on

#: Slurm's own daemons: they authenticate every request with munge (AuthType=auth/munge).
SLURM_DAEMONS = {("slurmctld", 6817), ("slurmd", 6818)}
SITE = "lab"


@dataclass(frozen=True)
class Scanned:
    host: str
    listener: Listener
    exposures: tuple[Exposure, ...]  # one per address probed; none for loopback

    def who(self) -> str:
        return f"{self.host} {self.listener.describe()}"

    @property
    def markers(self) -> tuple[str, ...]:
        return self.listener.services

    @property
    def protection(self) -> str:
        if not self.exposures:
            return "loopback"
        kinds = {e.protection for e in self.exposures}
        if "exposed" in kinds:
            return "exposed"
        names = {name for name, _ in self.listener.processes}
        if kinds == {""} and names and {(n, self.listener.port) for n in names} <= SLURM_DAEMONS:
            return "munge (Slurm's own daemon)"
        return kinds.pop() if len(kinds) == 1 else ""


def _list(host: str) -> list[Listener]:
    """The host's listening sockets, listed as root inside it (the desktop: this machine)."""
    if host == "desktop":
        proc = subprocess.run(["sh", "-c", LISTING_SCRIPT], capture_output=True, text=True, timeout=60)
    else:
        proc = run_lab("exec", host, "sh", "-c", LISTING_SCRIPT, timeout=60)
    assert proc.returncode == 0 and "LISTEN" in proc.stdout, f"{host}: listing sockets failed: {proc.stderr}"
    return parse_listing(proc.stdout)


def _link_local(lab, host: str) -> str | None:
    """The host's IPv6 link-local address, scoped for where the probes start (this machine's bridge,
    or on the closed lab login's own interface)."""
    out = run_lab("exec", host, "ip", "-6", "-o", "addr", "show", "dev", lab.data["interface"], "scope", "link", timeout=60).stdout
    scope = lab.data["interface"] if lab.closed else lab.data["bridge"]
    for field in out.split():
        if field.startswith("fe80::"):
            return f"{field.split('/')[0]}%{scope}"
    return None


def _targets(lab, host: str, listener: Listener, link_local: str | None) -> list[str]:
    if listener.loopback:
        return []
    if host == "desktop":
        return [lab.data["gateway"]] if listener.wildcard else [listener.address]  # as the lab hosts see it
    if not listener.wildcard:
        scope = lab.data["interface"] if lab.closed else lab.data["bridge"]
        return [f"{listener.address}%{scope}" if listener.address.startswith("fe80:") else listener.address]
    both = listener.address in ("*", "::")
    return [lab.hosts[host]] + ([link_local] if both and link_local else [])


def scan(lab, hosts: list[str] | None = None) -> list[Scanned]:
    """Every listening socket of every lab host (the desktop: the site's services only), probed."""
    rows: list[tuple[str, Listener, list[str]]] = []
    for host in hosts or [*lab.hosts, "desktop"]:
        link_local = _link_local(lab, host) if host != "desktop" else None
        for listener in _list(host):
            if host == "desktop" and not any(s.startswith(f"{SITE}/") for s in listener.services):
                continue  # this machine runs other things too; the site's own listeners are what count
            rows.append((host, listener, _targets(lab, host, listener, link_local)))
    forwards = SshForwards(lab.forward_argv)

    def connect_for(host: str):
        return forwards if lab.closed and host != "desktop" else direct

    try:
        with ThreadPoolExecutor(16) as pool:
            probed = [[pool.submit(probe, t, listener.port, connect=connect_for(host)) for t in targets] for host, listener, targets in rows]
            return [Scanned(host, listener, tuple(f.result() for f in futures)) for (host, listener, _), futures in zip(rows, probed)]
    finally:
        forwards.close()


@pytest.fixture(scope="module")
def scanned(lab, site, state_dir):
    """The scan, taken while the host workers and two Slurm workers run."""
    import toppipe

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TOPPIPE_STATE_DIR", str(state_dir))
        with toppipe.connect(SITE) as session:
            session.scale(2, on="slurm")
            try:
                _wait_for_slurm_workers(session, 2)
                yield scan(lab)
            finally:
                session.scale(0, on="slurm")


def _wait_for_slurm_workers(session, n: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while sum(1 for w in session.workers() if w.slurm_job) < n:
        assert time.monotonic() < deadline, f"fewer than {n} Slurm workers joined within {timeout:.0f} s: {session.workers()}"
        time.sleep(0.5)


def test_no_listener_answers_without_credentials(scanned):
    table = "\n".join(f"  {s.protection or 'UNPROVEN':28} {s.who()}" for s in scanned)
    print(f"\nexposure scan, {len(scanned)} listening sockets:\n{table}")
    exposed = [f"{s.who()}: {'; '.join(e.describe() for e in s.exposures if e.exposed)}" for s in scanned if s.protection == "exposed"]
    assert not exposed, "listening without credentials:\n" + "\n".join(exposed)
    unproven = [f"{s.who()}: {'; '.join(e.describe() for e in s.exposures)}" for s in scanned if not s.protection]
    assert not unproven, "refused every probe but showed no credential it wants (TLS, password, key):\n" + "\n".join(unproven)


#: Services whose process title overwrites their environment (and the marker in it): known by name.
BY_PROCESS_NAME = {"postgres": f"{SITE}/postgres", "redis-server": f"{SITE}/redis"}


def test_the_scan_saw_every_service_of_the_site(scanned):
    """Not vacuous: the site's listeners were there, the Slurm workers' included, where they belong."""
    seen = {(s.host, m) for s in scanned for m in s.markers}
    seen |= {(s.host, BY_PROCESS_NAME[n]) for s in scanned for n, _ in s.listener.processes if n in BY_PROCESS_NAME}
    expected = {("login", "lab/scheduler"), ("db", "lab/postgres"), ("db", "lab/redis"), ("desktop", "lab/jupyter")}
    expected |= {(node, "lab/workers") for node in ("node1", "node2")}
    assert expected <= seen, expected - seen
    assert any(m == f"{SITE}/slurm-worker" for host, m in seen if host in ("node1", "node2")), sorted(seen)


def test_workers_serve_http_on_loopback_only_and_dask_comms_with_mutual_tls(scanned):
    workers = [s for s in scanned if {f"{SITE}/workers", f"{SITE}/slurm-worker"} & set(s.markers)]
    beyond = [s for s in workers if not s.listener.loopback]
    assert beyond and all(s.protection == "mutual TLS" for s in beyond), [(s.who(), s.protection) for s in beyond]
    for kind in ("workers", "slurm-worker"):
        http = [s for s in workers if f"{SITE}/{kind}" in s.markers and s.listener.loopback]
        assert http, f"no loopback listener of {kind}: its HTTP server is not where it should be"


def test_sshd_takes_keys_only_and_the_data_services_want_a_password(scanned):
    by_process = {}
    for s in scanned:
        for name, _ in s.listener.processes:
            by_process.setdefault(name, set()).add(s.protection)
    assert by_process["sshd"] == {"ssh key"}
    for name in BY_PROCESS_NAME:
        found = {s.protection for s in scanned if s.host == "db" and name in dict(s.listener.processes) and not s.listener.loopback}
        assert found == {"password"}, f"{name}: {found}"


def test_the_scan_catches_an_open_http_server_on_a_node(lab, scanned):
    """The scan can fail: a plain HTTP server on a node's address, as the workers' were, is named."""
    node, address = "node2", lab.hosts["node2"]
    started = lab.ssh(node, f"cd /tmp; python3 -m http.server --bind {address} 0 >/dev/null 2>&1 </dev/null & echo $!")
    pid = int(started.stdout.split()[-1])
    try:
        deadline = time.monotonic() + 30
        while not (found := [s for s in scan(lab, [node]) if pid in dict(s.listener.processes).values()]):
            assert time.monotonic() < deadline, "the HTTP server never listened"
            time.sleep(0.2)
    finally:
        lab.ssh(node, f"kill {pid}")
    (caught,) = found
    assert caught.protection == "exposed", caught
    assert "answered HTTP without credentials (HTTP/1.0 200 OK)" in caught.exposures[0].describe()
    assert caught.who().startswith(f"{node} {address}:") and f"python3 pid {pid}" in caught.who()


def test_deploy_check_probes_the_sites_listeners_on_every_host(lab, scanned, state_dir):
    """The same probes run in every ``deploy check`` (and ``up``): a row per host, each passed."""
    result = run_deploy("check", "inventories/lab", state_dir=state_dir, timeout=300)
    rows = [line.split(None, 4) for line in result.stdout.splitlines() if line.split()[2:3] == ["listeners"]]
    assert sorted(row[0] for row in rows) == sorted([*lab.hosts, "desktop"]), result.stdout + result.stderr
    assert all(row[3] == "ok" for row in rows), result.stdout
    workers = {row[0]: row[4] for row in rows if row[0] in lab.data["slurm_nodes"]}
    assert all("mutual TLS" in detail for detail in workers.values()), workers


#: Ask a Slurm daemon with a munge credential of key $KEY (another key when empty), through a
#: munged of our own; prints the daemon's count of authentication errors before and after.
MUNGE_PROBE = """
set -e
d=$(mktemp -d)
# munged writes its seed and log as it ends: remove its folder only once it has ended.
stop() { p=$(cat $d/pid 2>/dev/null) || p=; [ -z "$p" ] || kill $p 2>/dev/null || true
  i=0; while [ -n "$p" ] && kill -0 $p 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; rm -rf $d; }
trap stop EXIT
if [ -n "$KEY" ]; then cp "$KEY" $d/key; else head -c 1024 /dev/urandom > $d/key; fi; chmod 600 $d/key
/usr/sbin/munged --key-file $d/key --socket $d/sock --pid-file $d/pid --log-file $d/log --seed-file $d/seed --force
sed '/^AuthInfo/d' "$CONF" > $d/slurm.conf; echo "AuthInfo=socket=$d/sock" >> $d/slurm.conf
before=$(grep -c 'Protocol authentication error' "$LOG" || true)
rc=0; SLURM_CONF=$d/slurm.conf timeout 60 $ASK >/dev/null 2>&1 || rc=$?
echo "rc=$rc errors=$before,$(grep -c 'Protocol authentication error' "$LOG" || true)"
"""


def _ask_with_munge_key(host: str, key: str, conf: str, log: str, ask: str) -> tuple[int, int, int]:
    env = [f"KEY={key}", f"CONF={conf}", f"LOG={log}", f"ASK={ask}"]
    proc = run_lab("exec", host, "env", *env, "sh", "-c", MUNGE_PROBE, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rc, errors = proc.stdout.split()[-2:]
    before, after = errors.removeprefix("errors=").split(",")
    return int(rc.removeprefix("rc=")), int(before), int(after)


@pytest.mark.parametrize(
    "daemon, conf, ask",
    [
        ("slurmctld", "/etc/slurm/slurm.conf", "sinfo -h"),
        ("slurmd", "/run/slurm/conf/slurm.conf", "scontrol show slurmd"),  # a configless node's copy
    ],
)  # fmt: skip
def test_slurm_daemons_refuse_a_request_signed_with_another_munge_key(lab, scanned, daemon, conf, ask):
    """Why the scan counts slurmctld and slurmd as authenticated: the same request, through the
    same kind of munged, is answered with the cluster's key and refused with any other."""
    host = lab.data["slurm_controller"] if daemon == "slurmctld" else lab.data["slurm_nodes"][0]
    assert any(s.host == host and s.protection.startswith("munge") for s in scanned), f"no {daemon} seen on {host}"
    log = f"/var/log/slurm/{daemon}.log"
    rc, before, after = _ask_with_munge_key(host, "/etc/munge/munge.key", conf, log, ask)
    assert rc == 0 and after == before, f"{host}: {ask!r} with the cluster's munge key failed ({rc})"
    rc, before, after = _ask_with_munge_key(host, "", conf, log, ask)
    assert rc != 0, f"{host}: {daemon} answered {ask!r} signed with another munge key"
    assert after > before, f"{host}: {daemon} logged no authentication error for the stranger's request"
