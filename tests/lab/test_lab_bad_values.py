"""A typo in an inventory never reaches a running site.

The lab site is brought up once (the ``site`` fixture). Then, for each class
of bad value, a copy of ``inventories/lab`` with that one value wrong is given
to ``up``: exit 2, exactly one line on stderr naming file, key and fix, no
traceback, no journal written, and on every host (desktop included) the
site's processes are the very same before and after.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, marked_pids, run_deploy

pytestmark = pytest.mark.lab

#: The lab's settings and hosts files, relative to the inventory folder.
SETTINGS, HOSTS = "group_vars/all.yml", "hosts.yml"

#: (case, file, text in the lab's file, its replacement, what the error line must hold: one text or several).
CASES = [
    ("walltime not a time", SETTINGS, 'walltime: "00:30:00"', 'walltime: "half an hour"',
     "group_vars/all.yml: toppipe.slurm.walltime: 'half an hour' is not a Slurm time"),
    ("walltime unquoted", SETTINGS, 'walltime: "00:30:00"', "walltime: 1:30:00",  # YAML reads 5400
     "group_vars/all.yml: toppipe.slurm.walltime: expected a non-empty string, got an integer 5400; put it in quotes"),
    ("zero cores", SETTINGS, "cores: 1", "cores: 0",
     "group_vars/all.yml: toppipe.slurm.cores: 0 cores cannot run a job; use 1 or more"),
    ("negative job limit", SETTINGS, "max_jobs: 4", "max_jobs: -1",
     "group_vars/all.yml: toppipe.slurm.max_jobs: -1 jobs would never run a worker"),
    ("zero threads", SETTINGS, "threads: 1", "threads: 0",
     "group_vars/all.yml: toppipe.workers.threads: 0 threads cannot run a worker; use 1 or more"),
    ("negative workers per host", SETTINGS, "per_host: 1", "per_host: -1",
     "group_vars/all.yml: toppipe.workers.per_host: -1 is negative; use 0 or more"),
    ("memory not a size", SETTINGS, "memory: 1GiB", "memory: 1G",
     "group_vars/all.yml: toppipe.workers.memory: '1G' is not a size; write it like 2GiB or 512MiB"),
    ("port out of range", SETTINGS, "dashboard: 8787", "dashboard: 87870",
     "group_vars/all.yml: toppipe.ports.dashboard: 87870 is not a TCP port; use 1-65535"),
    ("port clash among all ports", SETTINGS, "app: 8051", "app: 5432",
     "group_vars/all.yml: toppipe.ports.app: port 5432 is also toppipe.ports.postgres; give each service its own port"),
    ("bind not an address", SETTINGS, "bind: 127.0.0.1", "bind: loopback",
     "group_vars/all.yml: toppipe.bind: 'loopback' is not an IPv4 address"),
    ("relative shared folder", SETTINGS, "shared: /srv/", "shared: srv/",
     "group_vars/all.yml: toppipe.paths.shared: 'srv/toppipe-lab/shared' is relative; hosts need an absolute path"),
    ("root from ~", SETTINGS, "  paths:\n", "  paths:\n    root: ~/toppipe\n",
     "group_vars/all.yml: toppipe.paths.root: '~/toppipe' starts with ~, which each host would read as its own home"),
    ("missing project folder", SETTINGS, "project: ../../examples", "project: ../../no-such-project",
     "group_vars/all.yml: toppipe.paths.project: the project folder does not exist"),
    ("missing key file", SETTINGS, "ssh/id_ed25519", "ssh/no_such_key",
     "group_vars/all.yml: ansible_ssh_private_key_file: no such ssh key file on this machine: "),
    ("relative key file", SETTINGS, "ansible_ssh_private_key_file: /", "ansible_ssh_private_key_file: ",
     ("group_vars/all.yml: ansible_ssh_private_key_file: '", "' is relative, so it would depend on the folder deploy runs from")),
    ("public key for the private one", SETTINGS, "ssh/id_ed25519", "ssh/id_ed25519.pub",
     ("group_vars/all.yml: ansible_ssh_private_key_file: ", ".pub is a public key; name the private key")),
    ("missing known-hosts file", SETTINGS, "UserKnownHostsFile=/", "UserKnownHostsFile=/no-such-folder/",
     "group_vars/all.yml: ansible_ssh_common_args: no such known-hosts file on this machine: /no-such-folder/"),
    ("ProxyJump to nothing", SETTINGS, "StrictHostKeyChecking=yes", "StrictHostKeyChecking=yes -o ProxyJump=login:ssh",
     "group_vars/all.yml: ansible_ssh_common_args: ProxyJump=login:ssh names no host to jump through"),
    ("ssh port out of range", HOSTS, "      ansible_host: 10.213.7.21\n", "      ansible_host: 10.213.7.21\n      ansible_port: 0\n",
     "hosts.yml: all.hosts.node1.ansible_port: 0 is not a TCP port; use 1-65535"),
]  # fmt: skip

#: Every process of the lab site on a host: "pid marker" lines (Slurm workers left out: they rotate on their own).
MARKED = (
    "for p in /proc/[0-9]*; do m=$(tr '\\0' '\\n' < $p/environ 2>/dev/null | grep '^TOPPIPE_SERVICE=lab/'); "
    '[ -n "$m" ] && [ "$m" != TOPPIPE_SERVICE=lab/slurm-worker ] && echo "${p#/proc/} $m"; done | sort; true'
)


def lab_copy(root: Path) -> Path:
    """inventories/lab copied to ROOT/inventories/lab, with ROOT/examples beside it as in the repo."""
    folder = root / "inventories" / "lab"
    shutil.copytree(REPO / "inventories" / "lab", folder)
    os.symlink(REPO / "examples", root / "examples")  # paths.project is ../../examples
    return folder


def site_processes(lab) -> dict[str, list[str]]:
    """Per host, the site's processes; the desktop's from this machine."""
    found = {host: lab.ssh(host, MARKED).stdout.splitlines() for host in lab.hosts}
    found["desktop"] = sorted(map(str, marked_pids("lab")))
    return found


def journals(state_dir: Path) -> list[str]:
    folder = state_dir / "lab" / "deploys"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_the_good_copy_loads(tmp_path):
    """The cases below differ from a copy that is fine: only their one value breaks them."""
    from deploy.inventory import load_site

    assert load_site(lab_copy(tmp_path)).settings == load_site(REPO / "inventories" / "lab").settings


def test_every_bad_value_is_refused_before_any_host_is_touched(lab, site, state_dir, tmp_path):
    before, journals_before = site_processes(lab), journals(state_dir)
    assert all(before[h] for h in ("login", "db", "node1", "node2", "desktop")), before
    failures, took = [], []
    for index, (name, file, old, new, expected) in enumerate(CASES):
        folder = lab_copy(tmp_path / f"case{index}")
        path = folder / file
        text = path.read_text()
        assert old in text, f"{name}: {old!r} is not in the lab's {file} any more; update the case"
        path.write_text(text.replace(old, new, 1))
        started = time.monotonic()
        done = run_deploy("up", str(folder), state_dir=state_dir, timeout=120)
        took.append(time.monotonic() - started)
        problems = []
        if done.code != 2:
            problems.append(f"exit {done.code}")
        if "Traceback" in done.stdout + done.stderr:
            problems.append("a traceback")
        if done.stdout:
            problems.append(f"stdout {done.stdout[:200]!r}")
        fragments = (expected,) if isinstance(expected, str) else expected
        if done.stderr.count("\n") != 1 or not done.stderr.startswith("error: ") or not all(f in done.stderr for f in fragments):
            problems.append(f"stderr {done.stderr[-400:]!r}, want one line with {fragments!r}")
        if problems:
            failures.append(f"{name}: " + "; ".join(problems))
    after = site_processes(lab)
    assert not failures, "\n".join(failures)
    assert after == before, f"the site's processes changed:\nbefore {before}\nafter  {after}"
    assert journals(state_dir) == journals_before, "a refused up wrote a journal"
    print(f"{len(CASES)} bad values refused, {max(took):.1f} s at most, {sum(took) / len(took):.1f} s on average")
