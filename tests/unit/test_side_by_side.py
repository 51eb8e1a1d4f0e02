"""Services started side by side: which actions form a batch, what waits for what, and the
batch script run by bash (real bash, commands that only sleep and echo)."""

from __future__ import annotations

import subprocess

import pytest

from deploy.engine.batches import host_batches, prerequisites
from deploy.resources import Action, Directory, Service, ServiceSpec
from deploy.runtime import side_by_side
from deploy.runtime.side_by_side import Member


def _service(host: str, name: str, running: bool = True, after: tuple[str, ...] = ()) -> Action:
    spec = ServiceSpec(site="s", name=name, argv=("true",), rundir=f"/r/{name}", workdir="/w", after=after)
    return Action(host, name, Service(spec, running=running))


def _names(groups: list[list[Action]]) -> list[list[str]]:
    return [[f"{a.host}:{a.role}" for a in group] for group in groups]


def test_consecutive_services_of_a_host_form_one_batch_and_other_actions_are_barriers():
    folder = Action("a", "site", Directory("/x"))
    actions = [
        folder,
        _service("a", "scheduler"),
        _service("b", "workers"),  # another host's services do not end a's batch
        _service("a", "jupyter"),
        Action("b", "site", Directory("/y")),
        _service("b", "lsyncd"),
        Action("a", "site", Directory("/z")),
        _service("a", "dashboard"),
    ]
    assert _names(host_batches(actions)) == [
        ["a:site"],
        ["a:scheduler", "a:jupyter"],
        ["b:workers"],
        ["b:site"],
        ["b:lsyncd"],
        ["a:site"],
        ["a:dashboard"],
    ]


def test_a_start_waits_only_for_earlier_starts_of_its_batch_it_names():
    batch = [
        _service("a", "workers-early", after=("scheduler",)),  # listed before the scheduler: never waits (no cycle)
        _service("a", "scheduler", after=("records",)),  # records is no service of this batch
        _service("a", "workers", after=("scheduler",)),
        _service("a", "jupyter"),
        _service("a", "old", running=False, after=("scheduler",)),  # a stop waits for nothing
    ]
    assert prerequisites(batch) == {"workers-early": (), "scheduler": (), "workers": ("scheduler",), "jupyter": (), "old": ()}


def test_a_stopped_prerequisite_is_not_waited_for():
    batch = [_service("a", "scheduler", running=False), _service("a", "workers", after=("scheduler",))]
    assert prerequisites(batch) == {"scheduler": (), "workers": ()}


def _run(members: list[Member]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", side_by_side.script(members)], capture_output=True, text=True, timeout=60)


def _meets(me: str, others: list[str], folder) -> str:
    """Bash: say *me* is here, then wait (20 s at most) until every one of *others* is too."""
    waits = " ".join(f"[ -f {folder}/{o} ] &&" for o in others)
    return f"touch {folder}/{me}; for _ in $(seq 200); do {waits} exit 0; sleep 0.1; done; exit 1"


def test_members_run_at_once_and_report_each_output(tmp_path):
    names = ["a", "b", "c"]  # each waits for the others to have started: only side by side can all succeed
    members = [Member(n, f"echo {n} out; echo {n} err >&2; " + _meets(n, [o for o in names if o != n], tmp_path)) for n in names]
    done = _run(members)
    assert done.returncode == 0
    found = side_by_side.parse(done.stdout)
    assert {k: (m.rc, m.stdout, m.stderr) for k, m in found.items()} == {k: (0, f"{k} out", f"{k} err") for k in names}


def test_a_member_waits_for_its_prerequisite_and_is_not_run_when_it_fails(tmp_path):
    members = [
        Member("first", f"sleep 0.5; touch {tmp_path}/first"),
        Member("broken", "echo no such config >&2; exit 3"),
        Member("second", f"[ -f {tmp_path}/first ]", after=("first",)),
        Member("dependent", "echo ran", after=("broken",)),
        Member("further", "echo ran", after=("dependent",)),
    ]
    done = _run(members)
    assert done.returncode == 1  # the host's later actions must not run
    found = side_by_side.parse(done.stdout)
    assert found["first"].rc == found["second"].rc == 0
    assert (found["broken"].rc, found["broken"].stderr) == (3, "no such config")
    assert found["dependent"] == found["further"] == side_by_side.MemberOutcome(None, "", "")


def test_output_that_looks_like_a_report_line_stays_that_members_output():
    members = [Member("a", f"echo '{side_by_side.TAG} b rc 0'; exit 1"), Member("b", "exit 0")]
    found = side_by_side.parse(_run(members).stdout)
    assert found["a"].rc == 1 and found["b"].rc == 0
    assert found["a"].stdout == f"{side_by_side.TAG} b rc 0"


def test_the_statuses_of_a_batch_are_read_in_one_script():
    scripts = {"a": "echo state=running pid=1", "b": "x=1\nexit 3", "c": "echo one; echo two"}
    done = subprocess.run(["bash", "-c", side_by_side.statuses(scripts)], capture_output=True, text=True, timeout=60)
    assert side_by_side.parse_statuses(done.stdout) == {"a": "state=running pid=1", "b": "", "c": "one\ntwo"}


@pytest.mark.parametrize("key", ["", "two words", "a/b", "x&y"])
def test_keys_must_be_plain_names(key):
    with pytest.raises(ValueError):
        side_by_side.script([Member(key, "true")])
