"""`scripts/lab down` leaves nothing behind, and `up` (warm cache) brings the
site back. Marked lab_lifecycle: tests/lab/conftest.py runs it after every
other test, so no test sees the lab vanish under it.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.lab, pytest.mark.lab_lifecycle]

LAB_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "lab"
LAB_STATE = Path(os.environ.get("TOPPIPE_LAB_STATE", "/var/lib/toppipe-lab"))  # as the script
MARKERS = (b"TOPPIPE_LAB_HOST=", b"TOPPIPE_LAB_BUILD=")


def run_lab(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([str(LAB_SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout)


def leftovers(data: dict, state_dir: Path) -> list[str]:
    """Every process, mount, netns, link and folder of the lab still there."""
    found = []
    shared_root = str(Path(data["shared_path"]).parent)
    needles = (str(state_dir), shared_root)
    mount_namespaces = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
            mnt_ns = os.readlink(proc / "ns" / "mnt")
        except OSError:
            continue  # gone, a kernel thread, or not ours to read
        if any(e.startswith(MARKERS) for e in environ) or b"lab.d/boot.sh" in cmdline:
            found.append(f"process {proc.name}: {cmdline.decode(errors='replace')}")
        if mnt_ns not in mount_namespaces:
            mount_namespaces.add(mnt_ns)
            try:
                mounts = (proc / "mountinfo").read_text()
            except OSError:
                continue
            found += [f"mount in {mnt_ns}: {line}" for line in mounts.splitlines()
                      if any(n in line for n in needles)]
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [f"netns {line}" for line in netns.splitlines() if line.startswith("tplab")]
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    for line in links.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name == data["bridge"] or name.startswith("tplab"):
            found.append(f"link {name}")
    found += [f"folder {p}" for p in (state_dir, Path(shared_root)) if p.exists()]
    return found


def test_down_leaves_nothing_then_up_restores_the_site(lab, state_dir):
    from tests.conftest import run_deploy

    # the run's shared site first: its tunnel on the desktop binds the lab's ssh folder
    site_down = run_deploy("down", "inventories/lab", state_dir=state_dir, timeout=300)
    assert site_down.code in (0, 3), site_down.stdout + site_down.stderr  # 3: it was not deployed
    t0 = time.monotonic()
    down = run_lab("down", timeout=300)
    down_s = time.monotonic() - t0
    try:
        assert down.returncode == 0, down.stderr
        assert leftovers(lab.data, LAB_STATE) == []
        assert run_lab("status", timeout=60).returncode == 3
    finally:
        t0 = time.monotonic()
        up = run_lab("up")
        up_s = time.monotonic() - t0
    print(f"lab down {down_s:.1f} s, warm up {up_s:.1f} s")
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout)["hosts"] == lab.data["hosts"]
    assert up_s < 120, f"warm up took {up_s:.0f} s: is the cache used?"
    assert run_lab("status", timeout=60).returncode == 0
    # a fresh login key and fresh host keys, at the same paths
    proc = subprocess.run(["ssh", "-n", "-F", lab.data["ssh_config"], "login", "sinfo -h -o %t"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["idle"]
