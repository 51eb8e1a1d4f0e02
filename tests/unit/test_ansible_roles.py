"""Ansible roles in a site's role list: choosing them, cutting runs per engine, reading events."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from deploy.engine import Outcome
from deploy.engine.ansible_engine import _Events, _message, _plays
from deploy.engine.site_engine import segments
from deploy.inventory import load_site
from deploy.resources import Action, AnsibleTask, AnsibleTasks, Directory
from roles import ROLES, AnsibleRole, site_roles

REPO = Path(__file__).resolve().parents[2]


def test_lab_runs_prepare_through_ansible_before_toppipes_roles(lab_inventory):
    roles = site_roles(load_site(lab_inventory))
    assert [r.name for r in roles] == ["prepare", *(r.name for r in ROLES)]
    prepare = roles[0]
    assert isinstance(prepare, AnsibleRole) and prepare.folder == REPO / "roles" / "prepare"
    site = load_site(lab_inventory)
    assert [h.name for h in site.hosts if prepare.applies_to(site, h)] == ["login", "db", "node1", "node2"]


def test_a_site_without_a_role_list_gets_toppipes_roles():
    assert site_roles(load_site(REPO / "inventories" / "local")) == ROLES


def _inventory_with_role(tmp_path: Path, tasks: dict[str, str]) -> Path:
    folder = tmp_path / "inv"
    shutil.copytree(REPO / "inventories" / "local", folder)
    for name, text in tasks.items():
        (folder / "roles" / "extra" / "tasks").mkdir(parents=True, exist_ok=True)
        (folder / "roles" / "extra" / "tasks" / f"{name}.yml").write_text(text)
    settings = (folder / "group_vars" / "all.yml").read_text()
    names = "\n".join(f"    - {r.name}" for r in ROLES)
    (folder / "group_vars" / "all.yml").write_text(settings.replace("  paths:", f"  roles:\n    - extra\n{names}\n  paths:"))
    return folder


def test_an_inventory_role_runs_its_task_files_at_up_down_and_purge(tmp_path):
    from deploy.lifecycle import down_actions, up_actions
    from roles.base import HostContext

    folder = _inventory_with_role(tmp_path, {"main": "- ansible.builtin.ping:\n", "down": "- ansible.builtin.ping:\n"})
    site = load_site(folder)
    role = site_roles(site)[0]
    assert role.folder == (folder / "roles" / "extra").resolve()
    ctx = HostContext(site=site, host=site.hosts[0], root="/r", python="python3", files={})
    (up,) = role.up(ctx)
    assert (up.role, up.tasks) == ("extra", "main")
    assert dict(up.variables)["toppipe_root"] == "/r" and dict(up.variables)["toppipe_versions"]["apptainer"]
    assert [r.tasks for r in role.down(ctx)] == ["down"]
    assert role.purge(ctx) == []  # no tasks/purge.yml: nothing to do at down --purge
    ctxs = {h.name: ctx for h in site.hosts}
    assert isinstance(up_actions(site, ctxs)[0].resource, AnsibleTasks)
    assert isinstance(down_actions(site, ctxs, purge=False)[-2].resource, AnsibleTasks)  # down runs in reverse


def _tasks(role: str, tasks: str = "main") -> AnsibleTasks:
    return AnsibleTasks(role, f"/roles/{role}", tasks)


def test_actions_are_cut_into_runs_of_one_engine_in_order():
    actions = [
        Action("a", "prep", _tasks("prep")),
        Action("b", "prep", _tasks("prep")),
        Action("a", "site", Directory("/x")),
        Action("a", "late", _tasks("late")),
    ]
    assert [(kind, len(run)) for kind, run in segments(actions)] == [("ansible", 2), ("pyinfra", 1), ("ansible", 1)]


def test_one_play_per_role_and_task_file():
    actions = [Action("a", "p", _tasks("p")), Action("b", "p", _tasks("p")), Action("a", "p", _tasks("p", "down"))]
    assert [[a.host for a in play] for play in _plays(actions)] == [["a", "b"], ["a"]]
    with pytest.raises(TypeError):
        _plays([Action("a", "site", Directory("/x"))])


def _event(kind: str, host: str, task: str, **res) -> dict:
    return {"event": kind, "event_data": {"host": host, "task": task, "res": res}}


def test_events_become_results_like_the_pyinfra_engines():
    seen = []
    events = _Events({"a": Action("a", "prep", _tasks("prep")), "b": Action("b", "prep", _tasks("prep"))}, seen.append)
    events(_event("runner_on_start", "a", "t1"))
    events(_event("runner_on_ok", "a", "t1", changed=True))
    events(_event("runner_on_ok", "b", "t1", changed=False))
    events(_event("runner_on_skipped", "b", "t2"))
    events(_event("runner_on_failed", "a", "limit", msg="too few files", rc=1))
    events(_event("runner_on_unreachable", "b", "t3", msg="Connection timed out"))
    events(_event("runner_on_ok", "elsewhere", "t1", changed=True))  # not a host of this play
    outcomes = [(r.action.host, r.action.role, r.action.resource, r.outcome) for r in events.results]
    assert outcomes == [
        ("a", "prep", AnsibleTask("t1"), Outcome.CHANGED),
        ("b", "prep", AnsibleTask("t1"), Outcome.UNCHANGED),
        ("b", "prep", AnsibleTask("t2"), Outcome.UNCHANGED),
        ("a", "prep", AnsibleTask("limit"), Outcome.FAILED),
        ("b", "prep", AnsibleTask("t3"), Outcome.SKIPPED),
    ]
    assert seen == events.results  # reported as they happen
    assert events.results[3].message == "too few files"
    assert events.unreachable == {"b": "cannot connect: Connection timed out"}


def test_a_failed_command_says_its_exit_code_and_stderr():
    result = {"msg": "non-zero return code", "rc": 3, "stderr": "first\nsecond\nthird\nfourth\nlast", "cmd": ["df", "-Pk", "/x"]}
    assert _message(result) == "df -Pk /x: exit 3 / first / fourth / last"
    assert _message({"msg": "Error executing command.", "rc": 2, "cmd": "nvidia-smi -L"}) == "nvidia-smi -L: Error executing command."
    assert _message({"msg": "assertion failed"}) == "assertion failed"
    assert _message({}) == "failed with no message"


def test_runs_in_turn_skip_hosts_unreachable_or_failed_earlier():
    from deploy.engine import ActionResult, RunReport
    from deploy.engine.base import FAILED_EARLIER, in_turn

    def run(group):
        report = RunReport()
        for action in group:
            outcome = Outcome.FAILED if action.resource.path == "/fails" else Outcome.CHANGED
            report.results.append(ActionResult(action, outcome))
        return report

    first = [Action("a", "r", Directory("/fails")), Action("b", "r", Directory("/x")), Action("c", "r", Directory("/x"))]
    second = [Action(h, "r", Directory("/y")) for h in "abc"]
    seen = []
    report = in_turn([first, second], run, seen.append, unreachable={"c": "cannot connect: timed out"})
    outcomes = [(r.action.host, r.action.resource.path, r.outcome, r.message) for r in report.results]
    assert outcomes == [
        ("a", "/fails", Outcome.FAILED, ""),
        ("b", "/x", Outcome.CHANGED, ""),
        ("c", "/x", Outcome.SKIPPED, "cannot connect: timed out"),
        ("b", "/y", Outcome.CHANGED, ""),
        ("a", "/y", Outcome.SKIPPED, FAILED_EARLIER),
        ("c", "/y", Outcome.SKIPPED, "cannot connect: timed out"),
    ]
    assert report.unreachable == {"c": "cannot connect: timed out"}
    assert [(r.action.host, r.action.resource.path) for r in seen] == [("a", "/y")]  # an engine reports its own results
    planned = in_turn([first, second], run, stop_after_failure=False)
    assert [r.outcome for r in planned.results[3:]] == [Outcome.CHANGED] * 3
