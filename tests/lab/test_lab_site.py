"""The lab site behaves like a small real HPC site: ssh hosts with their own
pid namespaces, a shared folder, Slurm, Apptainer, and no way out.

Needs root; brings the lab up (scripts/lab up) when it is not.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

HOSTS = ["login", "db", "node1", "node2"]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def test_lab_json_describes_the_site(lab):
    data = lab.data
    assert sorted(lab.hosts) == sorted(HOSTS)
    assert len(set(lab.hosts.values())) == len(HOSTS)
    for key in ("ssh_user", "ssh_private_key", "ssh_known_hosts", "shared_path",
                "slurm_partition", "interface", "apptainer", "ssh_config"):
        assert data[key], key
    key = Path(data["ssh_private_key"])
    assert key.stat().st_mode & 0o777 == 0o600
    assert data["ssh_user"] != "root"
    assert data["slurm_nodes"] == ["node1", "node2"]


def test_status_says_up(lab):
    proc = subprocess.run([str(Path(__file__).resolve().parents[2] / "scripts" / "lab"), "status"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name, address in lab.hosts.items():
        assert name in proc.stdout and address in proc.stdout


@pytest.mark.parametrize("host", HOSTS)
def test_ssh_with_strict_host_keys_reaches_each_host(lab, host):
    proc = lab.ssh(host, "hostname; id -un; id -u")
    name, user, uid = proc.stdout.split()
    assert name == host
    assert user == lab.data["ssh_user"]
    assert int(uid) == lab.data["user_uid"]


def test_ssh_between_hosts_as_the_lab_user(lab):
    out = lab.ssh("login", "ssh -n -o StrictHostKeyChecking=yes -o BatchMode=yes node1 hostname"
                           " && ssh -n -o BatchMode=yes db hostname").stdout
    assert out.split() == ["node1", "db"]


def test_unknown_host_key_is_refused(lab, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    proc = lab.ssh("login", "true", check=False, known_hosts=str(empty))
    assert proc.returncode == 255
    assert "Host key verification failed" in proc.stderr


def test_ssh_config_file_works(lab):
    proc = subprocess.run(["ssh", "-n", "-F", lab.data["ssh_config"], "node2", "hostname"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "node2"


def test_root_login_is_refused(lab):
    proc = lab.ssh("login", "true", check=False, user="root")
    assert proc.returncode == 255
    assert "Permission denied" in proc.stderr


def test_password_login_is_not_offered(lab):
    argv = lab.ssh_argv("login") + ["-o", "PreferredAuthentications=password,keyboard-interactive",
                                   "--", "true"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 255
    assert "Permission denied (publickey)" in proc.stderr


@pytest.mark.parametrize("host", HOSTS)
def test_each_host_has_its_own_pid_namespace(lab, host):
    procs = lab.ssh(host, "ps -e -o pid=,comm=,args=").stdout.splitlines()
    pid1 = [line.split()[1] for line in procs if line.split()[0] == "1"]
    assert pid1 == ["tini"]
    # the machine's processes (this test run among them) are not seen from the host
    assert not [line for line in procs if "pytest" in line], procs


def test_hosts_resolve_and_reach_each_other(lab):
    script = (
        "import socket, json\n"
        f"names = {sorted(lab.hosts)!r}\n"
        "out = {}\n"
        "for n in names:\n"
        "    socket.create_connection((n, 22), timeout=5).close()\n"
        "    out[n] = socket.gethostbyname(n)\n"
        "print(json.dumps(out))\n"
    )
    proc = lab.ssh("node1", f"python3 -c {shlex.quote(script)}")
    assert json.loads(proc.stdout) == lab.hosts


def test_interface_has_the_host_address(lab):
    iface = lab.data["interface"]
    for host, address in lab.hosts.items():
        out = lab.ssh(host, f"ip -o -4 addr show dev {iface}").stdout
        assert f"{address}/" in out, (host, out)


@pytest.mark.parametrize("host", ["login", "node1"])
def test_no_route_out_of_the_subnet(lab, host):
    routes = lab.ssh(host, "ip -4 route show").stdout
    assert "default" not in routes
    assert routes.strip().splitlines() == [line for line in routes.strip().splitlines()
                                           if line.startswith(lab.data["subnet"])]
    # a route lookup only: no packet leaves (198.51.100.0/24 is TEST-NET-2)
    proc = lab.ssh(host, "ip route get 198.51.100.7", check=False)
    assert proc.returncode != 0
    assert "unreachable" in proc.stderr.lower()


def test_shared_folder_is_shared(lab):
    shared = Path(lab.data["shared_path"])
    name = f"lab-test-{uuid.uuid4().hex}"
    lab.ssh("node1", f"echo written-on-node1 > {shared}/{name} && mkdir {shared}/{name}.d")
    try:
        assert lab.ssh("node2", f"cat {shared}/{name}").stdout.strip() == "written-on-node1"
        assert lab.ssh("login", f"stat -c %u {shared}/{name}").stdout.strip() == str(lab.data["user_uid"])
        lab.ssh("login", f"printf hi > {shared}/{name}.d/from-login")
        assert lab.ssh("node2", f"cat {shared}/{name}.d/from-login").stdout == "hi"
        # the desktop sees it only while the lab is open (test_lab_closed: not when closed)
        assert (shared / name).is_file() is not lab.closed
    finally:
        lab.ssh("node1", f"rm -rf {shared}/{name} {shared}/{name}.d", check=False)


def test_python_venv_and_rsync_on_hosts(lab):
    for host in HOSTS:
        out = lab.ssh(host, "python3 -c 'import sys, venv, ensurepip; print(*sys.version_info[:2])'"
                            " && rsync --version | head -1").stdout
        version, rsync = out.strip().splitlines()
        assert version == "3 11", (host, version)
        assert rsync.startswith("rsync"), (host, rsync)
    # what a deploy does first: a venv with pip, offline
    out = lab.ssh("node2", "d=$(mktemp -d) && python3 -m venv $d/v && $d/v/bin/pip --version;"
                           " rc=$?; rm -rf $d; exit $rc").stdout
    assert "python 3.11" in out


def sinfo_states(lab) -> dict[str, str]:
    out = lab.ssh("login", f"sinfo -h -N -p {lab.data['slurm_partition']} -o '%N %t'").stdout
    return dict(line.split() for line in out.strip().splitlines())


def test_sinfo_shows_both_nodes_idle(lab):
    states = wait_for(lambda: (s := sinfo_states(lab)) and set(s.values()) == {"idle"} and s,
                      timeout=60, what="both nodes idle")
    assert sorted(states) == ["node1", "node2"]


def test_srun_runs_on_both_nodes(lab):
    out = lab.ssh("login", "srun -N2 --time=1 hostname", timeout=120).stdout
    assert sorted(out.split()) == ["node1", "node2"]


def test_sbatch_wrap_in_the_shared_folder(lab):
    shared = lab.data["shared_path"]
    tag = uuid.uuid4().hex[:8]
    job = lab.ssh(
        "login",
        f"sbatch --parsable --chdir={shared} -o {shared}/lab-test-{tag}-%j.out "
        f"--time=1 --mem=100M --wrap 'hostname; pwd; id -un'",
    ).stdout.strip()
    out = f"{shared}/lab-test-{tag}-{job}.out"

    def output() -> list[str]:  # read on login: the shared folder is not on the desktop of a closed lab
        return lab.ssh("login", f"cat {out} 2>/dev/null || true").stdout.split()

    try:
        host, cwd, user = wait_for(lambda: len(found := output()) == 3 and found, timeout=60, what=f"output of job {job}")
        assert host in lab.data["slurm_nodes"]
        assert cwd == shared
        assert user == lab.data["ssh_user"]
    finally:
        lab.ssh("login", f"rm -f {out}")


def test_squeue_and_scancel(lab):
    job = lab.ssh("login", "sbatch --parsable --time=5 --wrap 'sleep 300' "
                           f"--chdir={lab.data['shared_path']} -o /dev/null").stdout.strip()
    try:
        wait_for(lambda: lab.ssh("login", f"squeue -h -j {job} -o %T").stdout.strip() == "RUNNING",
                 timeout=60, what=f"job {job} running")
    finally:
        lab.ssh("login", f"scancel {job}")
    wait_for(lambda: lab.ssh("login", f"squeue -h -j {job} -o %T", check=False).stdout.strip()
             in ("", "CANCELLED", "COMPLETING"), timeout=60, what=f"job {job} cancelled")


def test_apptainer_version_on_a_node(lab):
    out = lab.ssh("node1", f"{lab.data['apptainer']} --version").stdout
    assert out.startswith("apptainer version ")
    assert lab.ssh("node2", "command -v apptainer").stdout.strip() == lab.data["apptainer"]


def test_apptainer_on_the_machine():
    proc = subprocess.run(["apptainer", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("apptainer version "), proc.stderr


def test_apptainer_exec_and_instances_as_the_lab_user(lab):
    """Unprivileged exec and instance start/list/stop, on an image built
    from a busybox folder (no network needed)."""
    work = f"{lab.data['shared_path']}/lab-test-{uuid.uuid4().hex[:8]}"
    inst = f"labtest{uuid.uuid4().hex[:6]}"
    build = (
        f"set -e; mkdir -p {work}/root/bin {work}/root/tmp && cd {work} && "
        "cp /bin/busybox root/bin/ && for a in sh sleep cat echo; do ln -s busybox root/bin/$a; done && "
        "apptainer -s build img.sif root"
    )
    try:
        lab.ssh("node1", build)
        assert "hello" in lab.ssh("node1", f"apptainer -s exec {work}/img.sif echo hello").stdout
        lab.ssh("node2", f"apptainer -s instance start {work}/img.sif {inst}")
        listed = json.loads(lab.ssh("node2", "apptainer instance list --json").stdout)
        assert inst in [i["instance"] for i in listed["instances"]]
        out = lab.ssh("node2", f"apptainer -s exec instance://{inst} echo in-instance").stdout
        assert out.strip() == "in-instance"
        lab.ssh("node2", f"apptainer -s instance stop {inst}")
        listed = json.loads(lab.ssh("node2", "apptainer instance list --json").stdout)
        assert inst not in [i["instance"] for i in listed["instances"]]
    finally:
        lab.ssh("node2", f"apptainer -s instance stop {inst}", check=False)
        lab.ssh("node1", f"rm -rf {work}", check=False)
