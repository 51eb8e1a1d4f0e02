"""The fast path's digest, record and probe (deploy/converged.py), the probe run for real with bash."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from deploy import converged
from deploy.engine.ansible_engine import managed_paths
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


def test_a_check_the_probe_leaves_out_is_trusted_until_the_host_runs_in_full(site_files):
    """An Ensure with probed=False (a check that takes a service's own client) is not run by the
    probe: its state is trusted while the host's inputs are unchanged."""
    root, actions = site_files
    slow = Action(HOST, "site", Ensure("schema", f"[ -f {root}/schema ]", f"touch {root}/schema", probed=False))
    remember(root, [*actions, slow])
    assert "schema" not in converged.probe_script(OneHost(), str(root), [*actions, slow])
    assert probe(root, [*actions, slow]).converged  # its check would fail: no file schema
    probed = Action(HOST, "site", Ensure("schema", f"[ -f {root}/schema ]", f"touch {root}/schema"))
    assert probe(root, [*actions, probed]).reasons == ["schema: its check fails"]


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
        changed = probe(tmp_path, [Action(HOST, "sleeper", Service(other))])
        assert (changed.reasons[-1], changed.restarts) == ("sleeper: would start", ["sleeper"])
        stopping = probe(tmp_path, [Action(HOST, "sleeper", Service(spec, running=False))])
        assert (stopping.reasons[-1], stopping.restarts) == ("sleeper: would stop", [])
        bash(f"kill -9 $(cat {tmp_path}/run/pid)")
        dead = probe(tmp_path, actions)
        assert (dead.reasons, dead.restarts) == (["sleeper: would start"], [])  # started, not restarted
    finally:
        bash(runtime.sweep_command("converged-test"))


def test_a_host_that_does_not_answer_runs_in_full():
    assert converged.judge(HOST, [Action(HOST, "site", Directory("/x"))], None).reasons == ["no answer to the probe"]


@pytest.fixture
def prepared(tmp_path) -> tuple[Path, list[Action], dict]:
    """A host whose Ansible role made a folder (mode asked), a note in it, and removed a file, recorded
    as the Ansible engine reports them; and an Ensure of toppipe's own."""
    folder = tmp_path / "roles" / "prepare"
    (folder / "tasks").mkdir(parents=True)
    (folder / "tasks" / "main.yml").write_text("- name: a task\n  ansible.builtin.ping:\n")
    root = tmp_path / "root"
    (root / "shared").mkdir(parents=True, mode=0o700)
    (root / "shared").chmod(0o700)
    (root / "shared" / "README.txt").write_text("what the folder holds\n")
    (root / "stamp").touch()
    role = Action(HOST, "prepare", AnsibleTasks("prepare", str(folder), "main", (("toppipe_root", str(root)),)))
    stamp = Action(HOST, "site", Ensure("stamp", f"[ -f {root}/stamp ]", "true"))
    results = [  # as ansible-runner reports a file task, a template task and a file task with state absent
        {"path": str(root / "shared"), "state": "directory", "mode": "0700", "invocation": {"module_args": {"mode": "0700"}}},
        {"dest": str(root / "shared" / "README.txt"), "state": "file", "mode": "0600", "checksum": hashlib.sha1(b"what the folder holds\n").hexdigest(),
         "invocation": {"module_args": {"mode": None}}},
        {"path": str(root / "old"), "state": "absent", "invocation": {"module_args": {}}},
    ]  # fmt: skip
    entry = converged.role_entry(role.resource, [e for r in results for e in managed_paths(r)], None)
    done = bash(converged.write_script(str(root), converged.record([role, stamp], {"prepare": entry})))
    assert done.returncode == 0, done.stderr
    return root, [role, stamp], entry


def test_what_an_ansible_task_manages_is_read_from_its_result():
    template = {"dest": "/s/README.txt", "state": "file", "mode": "0600", "checksum": "abc", "changed": True,
                "invocation": {"module_args": {"mode": "0600"}}}  # fmt: skip
    assert managed_paths(template) == [{"path": "/s/README.txt", "kind": "file", "mode": "600", "sha1": "abc"}]
    unasked = {"path": "/s/images", "state": "directory", "mode": "0755", "invocation": {"module_args": {"mode": None}}}
    assert managed_paths({"results": [unasked, {"skipped": True, "path": "/s/x", "state": "directory"}]}) == [
        {"path": "/s/images", "kind": "directory"}]  # a mode the task did not ask for is not its to keep
    assert managed_paths({"path": "/s/old", "state": "absent"}) == [{"path": "/s/old", "kind": "absent"}]
    for nothing in [
        {"changed": False, "msg": "All assertions passed"},  # assert
        {"stdout": "nofile=1024", "rc": 0, "cmd": "ulimit -Hn"},  # shell
        {"name": "toppipe", "state": "present", "home": "/home/toppipe"},  # user
        {"path": "/elsewhere", "state": "file", "_ansible_delegated_vars": {"ansible_host": "db"}},  # another host's
        {"path": "relative", "state": "file"},
    ]:
        assert managed_paths(nothing) == [], nothing


def test_a_converged_role_is_not_run_and_drift_of_what_it_manages_runs_it(prepared):
    root, actions, _ = prepared
    verdict = probe(root, actions)
    assert verdict.converged and not verdict.role_runs("prepare"), (verdict.reasons, verdict.ansible)

    (root / "shared" / "README.txt").unlink()
    verdict = probe(root, actions)
    drift = f"drift: {root}/shared/README.txt missing"
    assert verdict.ansible == {"prepare": drift} and verdict.reasons == [f"{drift} (ansible role prepare)"]
    assert verdict.role_runs("prepare")

    (root / "shared" / "README.txt").write_text("edited by hand\n")
    assert probe(root, actions).ansible == {"prepare": f"drift: {root}/shared/README.txt changed"}
    (root / "shared" / "README.txt").write_text("what the folder holds\n")
    (root / "shared").chmod(0o755)
    assert probe(root, actions).ansible == {"prepare": f"drift: {root}/shared has mode 755, not 700"}
    (root / "shared").chmod(0o700)
    (root / "old").touch()
    assert probe(root, actions).ansible == {"prepare": f"drift: {root}/old exists"}


def test_a_host_that_drifted_elsewhere_runs_in_full_but_not_its_role_in_place(prepared):
    root, actions, _ = prepared
    (root / "stamp").unlink()
    verdict = probe(root, actions)
    assert verdict.reasons == ["stamp: its check fails"] and not verdict.role_runs("prepare")


def test_a_role_runs_when_its_inputs_changed_or_without_a_record_of_it(prepared, tmp_path):
    root, actions, entry = prepared
    (tmp_path / "roles" / "prepare" / "tasks" / "main.yml").write_text("- name: another task\n  ansible.builtin.ping:\n")
    verdict = probe(root, actions)
    assert verdict.reasons[0] == "its inputs changed" and verdict.ansible == {"prepare": "its inputs changed"}
    assert converged.role_entry(actions[0].resource, [], entry)["paths"] == []  # other inputs: its old paths are not its
    (root / converged.RECORD_NAME).unlink()
    assert probe(root, actions).ansible == {"prepare": "no record of an earlier run"}


def test_a_role_that_ran_again_with_the_same_inputs_keeps_the_paths_it_managed_before(prepared):
    _, actions, entry = prepared
    again = converged.role_entry(actions[0].resource, [{"path": "/new", "kind": "directory"}], entry)
    assert [e["path"] for e in again["paths"]] == sorted([*(e["path"] for e in entry["paths"]), "/new"])
