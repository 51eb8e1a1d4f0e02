"""Host workers follow their scheduler: an ``up`` that restarts a running scheduler applies its
host first, then the other hosts, and starts again every worker that joined the old scheduler
(dask workers end with the scheduler they joined), and none when the new one was refused."""

from __future__ import annotations

from deploy import converged, lifecycle
from deploy.engine import ActionResult, Outcome, RunReport
from deploy.inventory.loader import load_site
from deploy.resources import Action, Directory, Service, ServiceSpec
from deploy.runtime import ServiceState, Step, next_step


def service(host: str, name: str) -> Action:
    spec = ServiceSpec(site="lab", name=name, argv=("run",), rundir=f"/r/{name}", workdir="/r", ends_with_scheduler=name == "workers")
    return Action(host, name, Service(spec))


def lab_actions() -> list[Action]:
    return [service("login", "scheduler"), service("login", "workers"), Action("node1", "site", Directory("/srv/node1")),
            service("node1", "workers"), service("node2", "workers")]  # fmt: skip


def test_a_restart_starts_a_service_that_runs_as_wanted():
    running = ServiceState.parse("state=running pid=7 digest=abc kept=abc")
    assert next_step(running, "abc", True) is Step.NOTHING
    assert next_step(running, "abc", True, restart=True) is Step.START
    assert next_step(ServiceState.parse("state=stopped"), "abc", False, restart=True) is Step.NOTHING


def test_an_up_that_restarts_the_scheduler_applies_its_host_first(lab_inventory):
    site, actions = load_site(lab_inventory), lab_actions()
    restarting = {"login": converged.Verdict("login", ["scheduler: would start"], restarts=["scheduler"])}
    assert lifecycle.waves(site, actions, restarting) == (actions[:2], actions[2:])
    asked = {"login": converged.Verdict("login", [converged.ASKED])}  # up --full: nothing probed
    assert lifecycle.waves(site, actions, asked) == (actions[:2], actions[2:])
    starting = {"login": converged.Verdict("login", ["scheduler: would start"])}  # it was not running
    assert lifecycle.waves(site, actions, starting) == (actions, None)
    assert lifecycle.waves(site, actions, {}) == (actions, None)  # login converged


def test_every_worker_that_joined_the_old_scheduler_starts_again(lab_inventory):
    site, actions = load_site(lab_inventory), lab_actions()
    then = actions[2:4]  # login's ran first; node2 converged: none of its actions runs
    report = RunReport([ActionResult(actions[0], Outcome.CHANGED), ActionResult(actions[1], Outcome.UNCHANGED)])
    notes = []
    found, replaced = lifecycle.after_scheduler(site, actions, then, report, notes.append)
    assert found[0] is actions[2]  # node1's own actions, in their order
    assert [(a.host, a.resource.describe()) for a in found[1:]] == [
        ("node1", "restart workers"), ("login", "restart workers"), ("node2", "restart workers")]  # fmt: skip
    assert replaced == {id(actions[1]), id(actions[4])}  # their unchanged results give way to the restarts
    assert notes == ["login/workers, node1/workers, node2/workers: start again, the scheduler was restarted"]


def test_workers_run_on_when_the_new_scheduler_was_refused_or_the_workers_started_after_it(lab_inventory):
    site, actions = load_site(lab_inventory), lab_actions()
    refused = RunReport([ActionResult(actions[0], Outcome.REFUSED, "failed its check"), ActionResult(actions[1], Outcome.UNCHANGED)])
    assert lifecycle.after_scheduler(site, actions, actions[2:], refused, print) == (actions[2:], set())
    both = RunReport([ActionResult(actions[0], Outcome.CHANGED), ActionResult(actions[1], Outcome.CHANGED)])
    found, _ = lifecycle.after_scheduler(site, actions, [], both, print)
    assert [a.host for a in found] == ["node1", "node2"]  # login's own workers started after it in its batch
