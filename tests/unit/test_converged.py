"""The fast path's digest, record and probe (deploy/converged.py), the probe run for real with bash."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from deploy import converged
from deploy.resources import Absent, Action, AnsibleTasks, Directory, Ensure, File, Service, ServiceSpec, Upload
from deploy.runtime import NativeRuntime

HOST = "node1"


class OneHost:
    """The one thing the probe asks of a site: each host's runtime."""

    def host(self, name: str):
        return SimpleNamespace(name=name, runtime="native")


def bash(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)


def probe(root: Path, actions: list[Action]) -> converged.Verdict:
    done = bash(converged.probe_script(OneHost(), str(root), actions))
    assert done.returncode == 0, done.stderr
    return converged.judge(HOST, actions, done.stdout)


def remember(root: Path, actions: list[Action]) -> None:
    done = bash(converged.write_script(str(root), converged.record(actions)))
    assert done.returncode == 0, done.stderr


@pytest.fixture
def site_files(tmp_path) -> tuple[Path, list[Action]]:
    """A host's folder, its actions, all in place, and the record of a converged up."""
    root = tmp_path / "root"
    source = tmp_path / "source.txt"
    source.write_text("uploaded\n")
    actions = [
        Action(HOST, "site", Directory(str(root / "etc"), 0o700)),
        Action(HOST, "site", File(str(root / "etc" / "a.yaml"), b"a: 1\n", 0o600)),
        Action(HOST, "site", Upload(str(source), str(root / "copy.txt"), 0o644)),
        Action(HOST, "images", Upload(str(source), str(root / "img-abc.sif"), named_by_content=True)),
        Action(HOST, "site", Absent(str(root / "old"))),
        Action(HOST, "site", Ensure("stamp", f"[ -f {root}/stamp ]", f"touch {root}/stamp")),
    ]
    (root / "etc").mkdir(parents=True, mode=0o700)
    (root / "etc").chmod(0o700)
    (root / "etc" / "a.yaml").write_bytes(b"a: 1\n")
    (root / "etc" / "a.yaml").chmod(0o600)
    (root / "copy.txt").write_text("uploaded\n")
    (root / "copy.txt").chmod(0o644)
    (root / "img-abc.sif").write_text("image")
    (root / "stamp").touch()
    remember(root, actions)
    return root, actions


def test_the_digest_follows_content_and_definitions_only():
    file = Action(HOST, "site", File("/r/a", b"one"))
    spec = ServiceSpec(site="s", name="web", argv=("run",), rundir="/r/run", workdir="/r")
    service = Action(HOST, "web", Service(spec))
    digest = converged.host_digest([file, service])
    assert converged.host_digest([Action(HOST, "site", File("/r/a", b"one")), service]) == digest
    assert converged.host_digest([Action(HOST, "site", File("/r/a", b"two")), service]) != digest
    assert converged.host_digest([file, Action(HOST, "web", Service(spec, running=False))]) != digest
    changed = ServiceSpec(site="s", name="web", argv=("run", "--fast"), rundir="/r/run", workdir="/r")
    assert converged.host_digest([file, Action(HOST, "web", Service(changed))]) != digest
    checked = ServiceSpec(site="s", name="web", argv=("run",), rundir="/r/run", workdir="/r", check_argv=("check",))
    assert converged.host_digest([file, Action(HOST, "web", Service(checked))]) == digest  # no restart: same state
    assert converged.host_digest([service, file]) != digest


def test_the_record_is_private_and_a_host_in_place_is_converged(site_files):
    root, actions = site_files
    assert (root / converged.RECORD_NAME).stat().st_mode & 0o777 == 0o600
    verdict = probe(root, actions)
    assert verdict.converged, verdict.reasons


def test_without_a_record_or_with_other_inputs_the_host_runs_in_full(site_files):
    root, actions = site_files
    (root / converged.RECORD_NAME).write_text("{not json")
    assert probe(root, actions).reasons == ["its record is unreadable"]
    (root / converged.RECORD_NAME).unlink()
    verdict = probe(root, actions)
    assert verdict.reasons == ["no record of an earlier up"] and not verdict.had_record
    remember(root, actions)
    bigger = [*actions, Action(HOST, "site", Directory(str(root / "etc")))]
    assert probe(root, bigger).reasons == ["its inputs changed"]
    assert bash(converged.forget_script(str(root))).returncode == 0
    assert not (root / converged.RECORD_NAME).exists()


@pytest.mark.parametrize(
    "drift, reason",
    [
        (lambda root: (root / "etc" / "a.yaml").write_bytes(b"a: 2\n"), "file {root}/etc/a.yaml differs"),
        (lambda root: (root / "etc" / "a.yaml").chmod(0o644), "file {root}/etc/a.yaml differs"),
        (lambda root: (root / "copy.txt").write_text("edited\n"), "file {root}/copy.txt differs"),
        (lambda root: (root / "img-abc.sif").unlink(), "{root}/img-abc.sif missing"),
        (lambda root: (root / "etc").chmod(0o755), "folder {root}/etc missing or its mode differs"),
        (lambda root: (root / "old").mkdir(), "{root}/old exists"),
        (lambda root: (root / "stamp").unlink(), "stamp: its check fails"),
    ],
)
def test_drift_by_hand_is_found(site_files, drift, reason):
    root, actions = site_files
    drift(root)
    assert probe(root, actions).reasons == [reason.format(root=root)]


def test_a_running_service_is_converged_and_a_killed_one_is_not(tmp_path):
    runtime = NativeRuntime()
    spec = ServiceSpec(site="converged-test", name="sleeper", argv=(sys.executable, "-c", "import time; time.sleep(600)"),
                       rundir=str(tmp_path / "run"), workdir=str(tmp_path), start_timeout=20)  # fmt: skip
    actions = [Action(HOST, "sleeper", Service(spec))]
    try:
        started = bash(runtime.start_command(spec))
        assert started.returncode == 0, started.stderr
        remember(tmp_path, actions)
        assert probe(tmp_path, actions).converged
        other = ServiceSpec(**{**spec.__dict__, "argv": (*spec.argv, "again")})
        assert probe(tmp_path, [Action(HOST, "sleeper", Service(other))]).reasons[-1] == "sleeper: would start"
        assert probe(tmp_path, [Action(HOST, "sleeper", Service(spec, running=False))]).reasons[-1] == "sleeper: would stop"
        bash(f"kill -9 $(cat {tmp_path}/run/pid)")
        assert probe(tmp_path, actions).reasons == ["sleeper: would start"]
    finally:
        bash(runtime.sweep_command("converged-test"))


def test_a_host_that_does_not_answer_runs_in_full():
    assert converged.judge(HOST, [Action(HOST, "site", Directory("/x"))], None).reasons == ["no answer to the probe"]


def test_an_ansible_role_runs_when_its_inputs_changed_or_the_host_drifted(tmp_path):
    folder = tmp_path / "roles" / "prepare"
    (folder / "tasks").mkdir(parents=True)
    (folder / "tasks" / "main.yml").write_text("- name: a task\n  ansible.builtin.ping:\n")
    root = tmp_path / "root"
    root.mkdir()
    stamp = Action(HOST, "site", Ensure("stamp", f"[ -f {root}/stamp ]", "true"))
    role = Action(HOST, "prepare", AnsibleTasks("prepare", str(folder), "main", (("toppipe_root", str(root)),)))
    (root / "stamp").touch()
    remember(root, [role, stamp])
    assert probe(root, [role, stamp]).converged

    (root / "stamp").unlink()
    assert probe(root, [role, stamp]).ansible == {"prepare": "drift found (stamp: its check fails)"}

    (folder / "tasks" / "main.yml").write_text("- name: another task\n  ansible.builtin.ping:\n")
    verdict = probe(root, [role, stamp])
    assert verdict.reasons[0] == "its inputs changed" and verdict.ansible == {"prepare": "its inputs changed"}
