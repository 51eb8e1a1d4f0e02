"""scripts/toppipe on a desktop with no usable Python: the local site and the lab from the client image.

A throw-away user gets a copy of the checkout (no .venv), the image the client image
starts from (the lab's preparation built it; the user's first command builds the client
image on it, as a user, with the desktop's Apptainer), and a PATH with no Python 3.11 whose
``python`` and ``python3`` only log that they were called (tests/no_python.py). Through
the entry script alone it brings the local site up, computes from a notebook, converges
again with no change and takes the site down. Then, as root with both environments: ``up``
from the image after ``up`` from .venv changes nothing; and a copy of the lab, deployed from
the image with no Python on PATH, changes nothing on ``up`` from .venv, computes and goes
down leaving nothing.

The user's Apptainer runs unprivileged (user namespaces): processes started in the
background outlive ``apptainer exec`` only because the image runs as an unpacked folder.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

from deploy import images
from tests.conftest import REPO, marked_pids
from tests.inventory_copies import copy_lab_as_site
from tests.no_python import host_python_calls, no_python_path

pytestmark = pytest.mark.lab

USER = "toppipe-desktop"
PORTS = (8786, 8787, 8888, 8050)
NOTEBOOK = """
import json, nbformat
from nbclient import NotebookClient
nb = nbformat.v4.new_notebook()
nb.cells = [
    nbformat.v4.new_code_cell("import toppipe, sys\\nsession = toppipe.connect('local')\\nsession.wait_for_workers(2)"),
    nbformat.v4.new_code_cell(
        "from distributed import get_worker\\n"
        "results = session.client.gather(session.client.map(lambda i: (get_worker().name, i * i), range(20)))\\n"
        "print(sorted({r[0] for r in results}), sum(r[1] for r in results), sys.executable)"
    ),
    nbformat.v4.new_code_cell("restarted = session.services()['localhost/dashboard'].restart()\\n"
                              "print(restarted, sorted(s.health for s in session.services()))"),
    nbformat.v4.new_code_cell("session.close()"),
]
NotebookClient(nb, timeout=120, kernel_name="python3").execute()
print(json.dumps([nb.cells[1].outputs[0]["text"], nb.cells[2].outputs[-1]["text"]]))
"""


@pytest.fixture(scope="module")
def desktop(lab, tmp_path_factory):
    """The user, their checkout, the client image's base image in their cache, and a PATH without Python."""
    base = images.planned(images.IMAGES["client"].base).path
    if not base.is_file():
        pytest.fail(f"the lab's preparation did not build the image {base}")
    subprocess.run(["userdel", "-r", USER], capture_output=True)  # left by an interrupted run
    subprocess.run(["useradd", "-m", "-s", "/bin/bash", USER], check=True)
    account = pwd.getpwnam(USER)
    home = Path(account.pw_dir)
    checkout = home / "toppipe"
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True)
    for name in filter(None, listed.stdout.decode().split("\0")):
        if (REPO / name).is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, checkout / name)
    cached = home / ".cache" / "toppipe" / "images"
    cached.mkdir(parents=True)
    shutil.copy2(base, cached / base.name)  # (the whole chain would take minutes more; the base's
    # own build as a user, one `apptainer build --fakeroot`, is what deploy build does too)
    path = no_python_path(home / "no-python")
    subprocess.run(["chown", "-R", f"{USER}:{USER}", str(home)], check=True)
    yield {"home": home, "checkout": checkout, "path": path, "uid": account.pw_uid}
    subprocess.run(["pkill", "-KILL", "-u", USER], capture_output=True)
    subprocess.run(["userdel", "-r", USER], capture_output=True)


def as_user(desktop, command: str, timeout: float = 600, stdin: str | None = None) -> subprocess.CompletedProcess:
    """*command* in bash, as the user, in their checkout, with a clean environment."""
    env = ["env", "-i", f"HOME={desktop['home']}", f"USER={USER}", f"PATH={desktop['path']}", "LANG=C.UTF-8"]
    argv = ["runuser", "-u", USER, "--", *env, "bash", "-c", f"cd {desktop['checkout']} && {command}"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=stdin)


def host_pythons_called(desktop) -> str:
    return host_python_calls(desktop["home"] / "no-python")


def users_site_pids(desktop) -> list[int]:
    return [pid for pid in marked_pids("local") if psutil.Process(pid).uids().real == desktop["uid"]]


def host_pythons() -> set[tuple[int, int]]:
    """(device, inode) of this machine's Python interpreters."""
    found = set()
    for candidate in ("/usr/bin/python3", sys.executable, shutil.which("python3.11") or "/usr/bin/python3.11"):
        try:
            found.add((os.stat(candidate).st_dev, os.stat(candidate).st_ino))
        except OSError:
            pass
    return found


def test_the_entry_script_brings_the_local_site_up_from_the_image(desktop):
    chosen = as_user(desktop, "scripts/toppipe env")
    assert chosen.stdout.split()[0] == "image", chosen.stdout + chosen.stderr
    up = as_user(desktop, "scripts/toppipe up inventories/local", timeout=1200)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "building the client image" in up.stderr and "3/3 pack the SIF: done" in up.stderr, up.stderr
    assert "unpacking the client image" in up.stderr  # the first command built and unpacked it, once
    built = desktop["home"] / ".cache" / "toppipe" / "images" / images.planned("client").path.name
    assert (built.with_suffix(".d") / "opt" / "toppipe" / "inputs-digest").read_text().strip() == images.digest("client")
    status = as_user(desktop, "scripts/toppipe status inventories/local")
    assert status.returncode == 0, status.stdout + status.stderr
    pids = users_site_pids(desktop)
    assert len(pids) >= 4, status.stdout
    hosts = host_pythons()
    for pid in pids:  # every process of the site runs the image's Python, none this machine's
        exe = os.stat(f"/proc/{pid}/exe")
        assert (exe.st_dev, exe.st_ino) not in hosts, psutil.Process(pid).cmdline()
    notebook = as_user(desktop, "scripts/toppipe notebook inventories/local")
    assert notebook.returncode == 0 and "http://127.0.0.1:8888/lab" in notebook.stdout, notebook.stdout + notebook.stderr
    assert host_pythons_called(desktop) == ""


def test_a_notebook_connects_computes_and_restarts_a_service(desktop):
    """The notebook runs in the environment of the site's JupyterLab (scripts/toppipe-python,
    as a service): in the image, and its session reaches the desktop's services through the relay."""
    before = users_site_pids(desktop)
    ran = as_user(desktop, "scripts/toppipe-python -", stdin=NOTEBOOK)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    computed, restarted = json.loads(ran.stdout.strip().splitlines()[-1])
    names, total, kernel = computed.rsplit(" ", 2)
    assert names == "['localhost-0', 'localhost-1']" and int(total) == sum(i * i for i in range(20))
    assert kernel.strip() == "/opt/toppipe/venv/bin/python"  # the kernel ran in the image too
    assert "stopped" not in restarted and "not answering" not in restarted, restarted
    assert set(users_site_pids(desktop)) != set(before)  # the dashboard's processes are new ones


def test_a_second_up_changes_nothing(desktop):
    """Not even with the user's TMPDIR (where the relay is) outside the folders Apptainer binds itself."""
    tmpdir = Path(tempfile.mkdtemp(dir="/var/tmp"))
    shutil.chown(tmpdir, USER, USER)
    try:
        again = as_user(desktop, f"TMPDIR={tmpdir} scripts/toppipe up inventories/local")
    finally:
        shutil.rmtree(tmpdir)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "no changes" in again.stdout
    assert "unpacking" not in again.stderr


def test_down_leaves_nothing(desktop):
    down = as_user(desktop, "scripts/toppipe down inventories/local")
    assert down.returncode == 0, down.stdout + down.stderr
    assert users_site_pids(desktop) == []
    found = psutil.process_iter(["uids", "status", "cmdline"])
    alive = [p.info["cmdline"] for p in found if p.info["uids"].real == desktop["uid"] and p.info["status"] != psutil.STATUS_ZOMBIE]
    assert alive == []  # no process of the user at all: no service, relay or container left
    for port in PORTS:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))
    assert host_pythons_called(desktop) == ""


def entry(*args: str, env_name: str, state_dir: Path, **extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TOPPIPE_ENV": env_name, "TOPPIPE_STATE_DIR": str(state_dir), **extra}
    env.pop("TOPPIPE_SERVICE", None)
    return subprocess.run([str(REPO / "scripts" / "toppipe"), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_up_from_the_image_after_up_from_venv_changes_nothing(desktop, tmp_path):
    """(The other order: the lab's copy below, deployed from the image, then up from .venv.)"""
    first, then = "venv", "image"
    assert entry("up", "inventories/local", "--no-check", env_name=first, state_dir=tmp_path).returncode == 0
    try:
        again = entry("up", "inventories/local", env_name=then, state_dir=tmp_path)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "no changes" in again.stdout, again.stdout
    finally:
        down = entry("down", "inventories/local", env_name=then, state_dir=tmp_path)
    assert down.returncode == 0, down.stdout + down.stderr
    assert marked_pids("local") == []


LAB_SITE = "labimage"
LAB_HOSTS = ("login", "db", "node1", "node2")


@pytest.fixture(scope="module")
def lab_copy(lab, tmp_path_factory):
    """The lab's inventory as a site of its own (name, ports), beside the run's shared lab site."""
    ports = {"scheduler": 8806, "dashboard": 8807, "jupyter": 8909, "postgres": 5452, "redis": 6399, "app": 8071}
    return copy_lab_as_site(LAB_SITE, ports, tmp_path_factory.mktemp("inv") / LAB_SITE)


def lab_leftovers(lab) -> list[str]:
    """The site's processes on every lab host and its instances on this desktop."""
    marker = f"TOPPIPE_SERVICE={LAB_SITE}/.*"
    found = [f"{host}: {line}" for host in LAB_HOSTS
             for line in lab.ssh(host, f"grep -lzxE '{marker}' /proc/[0-9]*/environ 2>/dev/null || true").stdout.split()]
    instances = subprocess.run(["apptainer", "instance", "list"], capture_output=True, text=True).stdout
    found += [f"desktop instance: {line}" for line in instances.splitlines() if LAB_SITE in line]
    return found + [f"desktop process {pid}" for pid in marked_pids(LAB_SITE)]


def test_the_lab_deploys_from_the_image_computes_and_down_leaves_nothing(lab, lab_copy, tmp_path):
    """As root with a PATH whose Pythons only log: deploy, converge from .venv with no change, compute, down."""
    # the lab's ssh key and known_hosts are outside home and /tmp, which Apptainer binds itself
    image = {"PATH": no_python_path(tmp_path / "no-python"), "APPTAINER_BIND": "/var/lib/toppipe-lab"}
    state = tmp_path / "state"
    try:
        up = entry("up", str(lab_copy), env_name="image", state_dir=state, **image)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "checks passed" in up.stdout
        again = entry("up", str(lab_copy), "--no-check", env_name="venv", state_dir=state)
        assert again.returncode == 0 and "no changes" in again.stdout, again.stdout + again.stderr
        ran = subprocess.run([str(REPO / "scripts" / "toppipe"), "python", "-"], input=(
            "import toppipe\n"
            f"session = toppipe.connect({LAB_SITE!r})\n"
            "session.wait_for_workers(2)\n"
            "print(sum(session.client.gather(session.client.map(lambda i: i * i, range(20)))))\n"
        ), capture_output=True, text=True, timeout=300, env={**os.environ, **image, "TOPPIPE_ENV": "image", "TOPPIPE_STATE_DIR": str(state)})
        assert ran.returncode == 0 and ran.stdout.split()[-1] == str(sum(i * i for i in range(20))), ran.stdout + ran.stderr
    finally:
        down = entry("down", str(lab_copy), "--purge", env_name="image", state_dir=state, **image)
    assert down.returncode == 0, down.stdout + down.stderr
    assert lab_leftovers(lab) == []
    assert host_python_calls(tmp_path / "no-python") == ""
