"""The Ansible engine for real: ansible-runner on this machine, through the site's own inventory.

A copy of the local inventory gets an Ansible-layout role of its own
(defaults, a template, a handler). Its tasks run, report per task and host,
change nothing the second time, plan in check mode, and fail like a pyinfra
operation: host, role, task, message, exit 1, nothing after it started.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from deploy.engine import Outcome, get_engine
from deploy.inventory import load_site
from deploy.lifecycle import contexts, up_actions
from deploy.lifecycle import services as lifecycle_services
from deploy.state import site_files
from roles import ROLES
from tests.conftest import REPO, marked_pids, run_deploy

pytestmark = pytest.mark.integration

TASKS = """\
- name: the greeting file
  ansible.builtin.template:
    src: greeting.j2
    dest: "{{ toppipe_root }}/greeting.txt"
    mode: "0600"
  notify: note the new greeting

- name: the greeting is there
  ansible.builtin.command: cat {{ toppipe_root }}/greeting.txt
  changed_when: false
  check_mode: false
  failed_when: false
"""
DOWN = """\
- name: no greeting left
  ansible.builtin.file:
    path: "{{ toppipe_root }}/greeting.txt"
    state: absent
"""
FAILING = """\
- name: the site needs a GPU
  ansible.builtin.fail:
    msg: no GPU on {{ inventory_hostname }}
"""


def _inventory(tmp_path: Path, site: str, tasks: str, down: str | None = None) -> Path:
    folder = tmp_path / site
    shutil.copytree(REPO / "inventories" / "local", folder)
    role = folder / "roles" / "greet"
    for sub, name, text in [
        ("tasks", "main.yml", tasks),
        *([("tasks", "down.yml", down)] if down else []),
        ("defaults", "main.yml", "greet_whom: world\n"),
        ("templates", "greeting.j2", "hello {{ greet_whom }} from {{ toppipe_site }}\n"),
        ("handlers", "main.yml", f"- name: note the new greeting\n  ansible.builtin.copy:\n    content: noted\n    dest: \"{{{{ toppipe_root }}}}/noted.txt\"\n"),
    ]:
        (role / sub).mkdir(parents=True, exist_ok=True)
        (role / sub / name).write_text(text)
    settings_file = folder / "group_vars" / "all.yml"
    settings = yaml.safe_load(settings_file.read_text())
    settings["toppipe"].update(site=site, roles=["greet", *(r.name for r in ROLES)], paths={"project": str(REPO)})
    settings["toppipe"]["ports"] = {"scheduler": 28806, "dashboard": 28807, "jupyter": 28908, "app": 28070}  # no lab site uses 28xxx
    settings_file.write_text(yaml.safe_dump(settings))
    return folder


def _role_actions(folder: Path, state: Path, monkeypatch):
    monkeypatch.setenv("TOPPIPE_STATE_DIR", str(state))
    site = load_site(folder)
    with get_engine("pyinfra") as engine:
        ctxs = contexts(engine, site, site_files(site))
    return site, [a for a in up_actions(site, ctxs) if a.role == "greet"], ctxs


def test_a_role_runs_reports_each_task_and_changes_nothing_the_second_time(tmp_path, monkeypatch):
    site, actions, ctxs = _role_actions(_inventory(tmp_path, "ansgreet", TASKS), tmp_path / "state", monkeypatch)
    root = Path(ctxs["localhost"].root)
    root.mkdir(parents=True)
    seen = []
    first = get_engine("ansible").apply(site, actions, seen.append)
    assert first.ok, first.results
    assert [(r.action.host, r.action.role, r.action.resource.describe(), r.outcome) for r in first.results] == [
        ("localhost", "greet", "the greeting file", Outcome.CHANGED),
        ("localhost", "greet", "the greeting is there", Outcome.UNCHANGED),
        ("localhost", "greet", "note the new greeting", Outcome.CHANGED),  # the handler, notified by the template
    ]
    assert seen == first.results
    assert (root / "greeting.txt").read_text() == "hello world from ansgreet\n"
    assert (root / "greeting.txt").stat().st_mode & 0o777 == 0o600
    assert (site.state_dir / "ansible" / "greet.log").stat().st_mode & 0o777 == 0o600

    second = get_engine("ansible").apply(site, actions)
    assert second.ok and not second.changed, second.changed

    (root / "greeting.txt").unlink()
    plan = get_engine("ansible").plan(site, actions)
    # the handler would run, but its file is already as it wants it
    assert [(r.action.resource.describe(), r.outcome) for r in plan.results[:2]] == [
        ("the greeting file", Outcome.CHANGED), ("the greeting is there", Outcome.UNCHANGED)]
    assert not (root / "greeting.txt").exists()  # check mode changed nothing


def test_down_runs_the_roles_down_tasks(tmp_path, monkeypatch):
    from deploy.lifecycle import down_actions

    site, actions, ctxs = _role_actions(_inventory(tmp_path, "ansdown", TASKS, DOWN), tmp_path / "state", monkeypatch)
    greeting = Path(ctxs["localhost"].root) / "greeting.txt"
    greeting.parent.mkdir(parents=True)
    assert get_engine("ansible").apply(site, actions).ok and greeting.exists()
    down = [a for a in down_actions(site, ctxs, purge=False) if a.role == "greet"]
    assert [a.resource.tasks for a in down] == ["down"]
    report = get_engine("ansible").apply(site, down)
    assert [(r.action.resource.describe(), r.outcome) for r in report.results] == [("no greeting left", Outcome.CHANGED)]
    assert not greeting.exists()


def test_the_ansible_engine_reads_facts_through_the_same_inventory(tmp_path, monkeypatch):
    site, _, ctxs = _role_actions(_inventory(tmp_path, "ansfacts", TASKS), tmp_path / "state", monkeypatch)
    engine = get_engine("ansible")
    present = str(REPO / "README.md")
    assert engine.missing_files(site, {"localhost": [present, present + ".nope"]}) == {"localhost": [present + ".nope"]}
    assert engine.leftovers(site) == {"localhost": []}
    assert engine.home_dirs(site) == {}  # no remote host
    services = lifecycle_services(site, ctxs)
    with get_engine("pyinfra") as pyinfra:
        expected = pyinfra.service_states(site, services)
    found = engine.service_states(site, services)
    assert len(found) == len(services)
    assert {k: (s.running, s.answering) for k, s in found.items()} == {k: (s.running, s.answering) for k, s in expected.items()}


def test_a_failing_ansible_task_fails_up_like_a_pyinfra_operation(tmp_path):
    folder = _inventory(tmp_path, "ansfail", FAILING)
    state = tmp_path / "state"
    result = run_deploy("up", str(folder), state_dir=state, timeout=300)
    assert result.code == 1, result.stdout + result.stderr
    assert "failed: localhost greet: the site needs a GPU: no GPU on localhost" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert "NOT converged" in result.stdout and "did not converge" in result.stderr
    assert marked_pids("ansfail") == []  # the host failed: nothing after the role started there
    events = [json.loads(line) for line in next((state / "ansfail" / "deploys").glob("*-up")).joinpath("events.jsonl").read_text().splitlines()]
    assert {"host": "localhost", "role": "greet", "what": "the site needs a GPU", "outcome": "failed"}.items() <= events[0].items()
    assert {e["outcome"] for e in events[1:]} == {"skipped"}


def test_plan_shows_an_ansible_task_that_fails_in_check_mode(tmp_path):
    folder = _inventory(tmp_path, "ansplan", FAILING)
    result = run_deploy("plan", str(folder), state_dir=tmp_path / "state", timeout=300)
    assert result.code == 1, result.stdout + result.stderr
    assert "greet      the site needs a GPU  FAILS: no GPU on localhost" in result.stdout
    assert marked_pids("ansplan") == []
