"""The Ansible engine: Ansible-layout roles run through ansible-runner's Python API.

The only module of toppipe that imports ansible_runner. Ansible reads the
site's inventory folder itself (it is Ansible's own format), plus one small
generated file with what toppipe knows per host (``toppipe_root``...). Every
run gets a private data directory of its own, removed afterwards; its
output stays in ``<state>/ansible/<role>.log``. The event stream becomes the
same :class:`ActionResult` s the pyinfra engine reports, one per task and
host, so progress, summary and journal read alike for both engines. From the
same events, an ``up`` learns which paths each role manages on each host
(:func:`managed_paths`), which the fast path (:mod:`deploy.converged`) probes.

``plan`` is Ansible's check mode, with its limits: a task whose module cannot
predict its change (``command``, ``shell`` without ``creates``) is skipped
and shown as unchanged, and tasks that read what an earlier task would have
made see the host as it is.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

import ansible_runner
import ansible_runner.interface

from deploy.engine.base import ActionResult, Engine, Outcome, Progress, RunReport, in_turn
from deploy.files import private_dir, write_private
from deploy.inventory import Site, jumps
from deploy.resources import Action, AnsibleTask, AnsibleTasks, ServiceSpec
from deploy.runtime import ServiceState, get_runtime, runtime_for

logging.getLogger("ansible-runner").setLevel(logging.CRITICAL)

#: Events that end one task on one host.
_RESULTS = {"runner_on_ok", "runner_on_failed", "runner_on_unreachable", "runner_on_skipped"}

#: Ansible's settings for every run: host keys always checked, one ssh connection per host
#: per run (closed at the end), quiet about interpreters, no retry files, no colour.
_SETTINGS = {
    "ANSIBLE_HOST_KEY_CHECKING": "True",
    "ANSIBLE_PIPELINING": "True",
    "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=60s",
    "ANSIBLE_TIMEOUT": "10",  # the pyinfra engine's connect timeout
    "ANSIBLE_PYTHON_INTERPRETER": "auto_silent",
    "ANSIBLE_RETRY_FILES_ENABLED": "False",
    "ANSIBLE_NOCOLOR": "True",
    "ANSIBLE_LOCALHOST_WARNING": "False",
}


def _message(result: dict) -> str:
    """What a failed task said, in one line: the command it ran, its message, then the first
    and last lines of stderr."""
    lines = [line for line in str(result.get("stderr") or "").splitlines() if line.strip()]
    shown = lines[:1] + lines[-2:] if len(lines) > 3 else lines
    msg = str(result.get("msg") or "").strip()
    if msg == "non-zero return code":
        msg = f"exit {result.get('rc')}"
    command = result.get("cmd")
    if command:
        msg = f"{' '.join(command) if isinstance(command, list) else command}: {msg}"
    return " / ".join(part for part in [msg, *shown] if part) or "failed with no message"


#: The states of file-like modules' results (file, copy, template, get_url...) a probe can check.
_PROBED_STATES = ("file", "directory", "absent")


def managed_paths(result: dict) -> list[dict]:
    """The paths a task's result says it manages on its host, as :mod:`deploy.converged` records them.

    Results of file-like modules carry ``dest`` or ``path`` and a ``state`` (file, directory,
    absent); a file's ``checksum`` (sha1) is its content, and its mode counts only when the task
    asked for one. Anything else (asserts, shell, users, delegated tasks) manages nothing a
    probe can look at. A loop's items are read one by one.
    """
    if isinstance(result.get("results"), list):
        return [entry for item in result["results"] if isinstance(item, dict) for entry in managed_paths(item)]
    if result.get("failed") or result.get("skipped") or result.get("_ansible_delegated_vars"):
        return []
    path, state = result.get("dest") or result.get("path"), result.get("state")
    if not isinstance(path, str) or not path.startswith("/") or "\n" in path or state not in _PROBED_STATES:
        return []
    entry: dict = {"path": path, "kind": state}
    asked = ((result.get("invocation") or {}).get("module_args") or {}).get("mode")
    if state != "absent" and asked is not None and isinstance(result.get("mode"), str):
        try:
            entry["mode"] = f"{int(result['mode'], 8):o}"
        except ValueError:
            pass
    if state == "file" and isinstance(result.get("checksum"), str):
        entry["sha1"] = result["checksum"]
    return [entry]


def _play(actions: list[Action]) -> dict:
    """One play running one task file of one role on the hosts of *actions*."""
    first: AnsibleTasks = actions[0].resource  # type: ignore[assignment]
    return {
        "name": f"toppipe: {first.describe()}",
        "hosts": ":".join(a.host for a in actions),
        "gather_facts": False,
        "tasks": [{"ansible.builtin.import_role": {"name": first.folder, "tasks_from": first.tasks}}],
    }


def _plays(actions: list[Action]) -> list[list[Action]]:
    """Consecutive actions of the same role and task file, grouped: one play each, in order."""
    groups: list[list[Action]] = []
    for action in actions:
        resource = action.resource
        if not isinstance(resource, AnsibleTasks):
            raise TypeError(f"the Ansible engine runs Ansible roles only, not {resource!r}")
        last = groups[-1][0].resource if groups else None
        if last is not None and (last.folder, last.tasks) == (resource.folder, resource.tasks):
            groups[-1].append(action)
        else:
            groups.append([action])
    return groups


def _host_vars(site: Site, actions: Iterable[Action]) -> dict:
    """The generated inventory: toppipe's variables per host, and the client's Python for local hosts."""
    hosts: dict[str, dict] = {}
    for action in actions:
        found = hosts.setdefault(action.host, {})
        found.update(dict(action.resource.variables))  # type: ignore[union-attr]
        host = site.host(action.host)
        if host.is_local and not host.python:
            found.setdefault("ansible_python_interpreter", sys.executable)
        if host.jump:  # the hop's user, key and known hosts (ProxyJump alone would use ssh's defaults)
            found["ansible_ssh_extra_args"] = f"-F {shlex.quote(str(jumps.ssh_config(site)))}"
    return {"all": {"hosts": hosts}}


class _Events:
    """Turns ansible-runner's events into action results as tasks end on each host."""

    def __init__(self, by_host: dict[str, Action], progress: Progress | None, learn_paths: bool = False):
        self.by_host, self.progress, self.learn_paths = by_host, progress, learn_paths
        self.results: list[ActionResult] = []
        self.unreachable: dict[str, str] = {}
        self.outputs: dict[str, str] = {}
        self.managed: dict[str, list[dict]] = {host: [] for host in by_host}  # with learn_paths

    def __call__(self, event: dict) -> bool:
        kind = event.get("event")
        data = event.get("event_data") or {}
        host = data.get("host")
        if kind not in _RESULTS or host not in self.by_host:
            return True
        result = data.get("res") or {}
        self.outputs[host] = str(result.get("stdout") or "")
        task = AnsibleTask(str(data.get("task") or data.get("task_action") or "task"))
        action = Action(host, self.by_host[host].role, task)
        if kind == "runner_on_unreachable":
            self.unreachable[host] = f"cannot connect: {_message(result)}"
            outcome, message = Outcome.SKIPPED, self.unreachable[host]
        elif kind == "runner_on_failed" and not data.get("ignore_errors"):
            outcome, message = Outcome.FAILED, _message(result)
        elif kind == "runner_on_ok" and result.get("changed"):
            outcome, message = Outcome.CHANGED, ""
        else:
            outcome, message = Outcome.UNCHANGED, ""
        if kind == "runner_on_ok" and self.learn_paths:
            self.managed[host] += managed_paths(result)
        found = ActionResult(action, outcome, message)
        self.results.append(found)
        if self.progress:
            self.progress(found)
        return True


def _close_masters(folder: Path) -> None:
    """End the ssh connections Ansible kept open for the run, so none outlives it."""
    for socket in sorted(folder.glob("*")) if folder.is_dir() else ():
        subprocess.run(["ssh", "-o", f"ControlPath={socket}", "-O", "exit", "toppipe"], capture_output=True, timeout=10)


class AnsibleEngine(Engine):
    """Runs Ansible-layout roles (:class:`AnsibleTasks`) with ansible-runner."""

    name = "ansible"

    def __init__(self) -> None:
        self._unreachable: dict[str, dict[str, str]] = {}
        self._managed: dict[str, dict[str, dict[str, list[dict]]]] = {}

    def unreachable(self, site: Site) -> dict[str, str]:
        return dict(self._unreachable.get(site.name, {}))

    def managed_paths(self, site: Site) -> dict[str, dict[str, list[dict]]]:
        return {host: dict(roles) for host, roles in self._managed.get(site.name, {}).items()}

    def apply(self, site: Site, actions: list[Action], progress: Progress | None = None) -> RunReport:
        return self._run_all(site, actions, progress, check=False)

    def plan(self, site: Site, actions: list[Action]) -> RunReport:
        return self._run_all(site, actions, None, check=True)

    def _run_all(self, site: Site, actions: list[Action], progress: Progress | None, check: bool) -> RunReport:
        """One play after another; a host that failed or was unreachable in one is skipped after."""
        report = in_turn(_plays(actions), lambda play: self._run(site, play, progress, check), progress)
        self._unreachable.setdefault(site.name, {}).update(report.unreachable)
        return report

    def _run(self, site: Site, play: list[Action], progress: Progress | None, check: bool) -> RunReport:
        """One play through ansible-runner, in a private data directory of its own."""
        role: AnsibleTasks = play[0].resource  # type: ignore[assignment]
        events = _Events({a.host: a for a in play}, progress, learn_paths=not check)
        status, rc, output = self._runner(site, [_play(play)], _host_vars(site, play), events, check)
        if not check:
            for host, paths in events.managed.items():
                self._managed.setdefault(site.name, {}).setdefault(host, {})[role.role] = paths
        log = private_dir(site.state_dir / "ansible") / f"{role.role}.log"
        write_private(log, output)
        report = RunReport(results=events.results, unreachable=events.unreachable)
        reported = {r.action.host for r in events.results}
        for action in play:
            if action.host in reported:
                continue
            if status == "successful":  # the role has no task for this host
                report.results.append(ActionResult(action, Outcome.UNCHANGED))
            else:  # Ansible stopped before any task: a broken role or inventory
                errors = [line for line in output.splitlines() if "ERROR" in line] or output.strip().splitlines()[-1:]
                why = " ".join(errors[:2]).strip() or f"ansible-runner {status} (exit {rc}); see {log}"
                report.results.append(ActionResult(action, Outcome.FAILED, why))
        return report

    def _runner(self, site: Site, playbook: list[dict], inventory: dict, events, check: bool) -> tuple[str, int, str]:
        """Run *playbook*; (status, exit code, Ansible's output)."""
        # Short paths in the temporary folder: ssh control sockets must fit in 108 bytes. The
        # site's name (its start) tells one site's run from another's.
        private = Path(tempfile.mkdtemp(prefix=f"toppipe-ansible-{site.name[:16]}-"))
        try:
            (private / "hosts.yml").write_text(json.dumps(inventory))
            envvars = {
                **_SETTINGS,
                "ANSIBLE_SSH_CONTROL_PATH_DIR": str(private / "cp"),
                "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
            }
            runner = ansible_runner.interface.init_runner(
                private_data_dir=str(private),
                playbook=playbook,
                inventory=[str(site.inventory.parent.resolve()), str(private / "hosts.yml")],
                envvars=envvars,
                cmdline="--check" if check else None,
                quiet=True,
                event_handler=events,
            )
            # Under `python -m deploy` gevent reaps every child on SIGCHLD; pexpect (the
            # default) then loses ansible-playbook's exit status. A plain Popen does not.
            runner.runner_mode = "subprocess"
            runner.run()
            output = runner.stdout.read() if runner.stdout else ""
            return runner.status, runner.rc, output
        finally:
            _close_masters(private / "cp")
            shutil.rmtree(private, ignore_errors=True)

    # -- facts: one shell script per host, through Ansible's shell module ----

    def _shell(self, site: Site, scripts: dict[str, str]) -> dict[str, str]:
        """The stdout of each host's script (hosts Ansible cannot reach are left out)."""
        if not scripts:
            return {}
        plays = [Action(h, "facts", AnsibleTasks("facts", "", variables=(("toppipe_script", s),))) for h, s in scripts.items()]
        playbook = [{
            "name": "toppipe: facts",
            "hosts": ":".join(scripts),
            "gather_facts": False,
            "tasks": [{"name": "fact", "ansible.builtin.shell": "{{ toppipe_script }}", "args": {"executable": "/bin/bash"}}],
        }]  # fmt: skip
        events = _Events({a.host: a for a in plays}, None)
        self._runner(site, playbook, _host_vars(site, plays), events, check=False)
        self._unreachable.setdefault(site.name, {}).update(events.unreachable)
        return {host: out for host, out in events.outputs.items() if host not in events.unreachable}

    def service_states(self, site: Site, services: list[tuple[str, ServiceSpec]]) -> dict[tuple[str, str], ServiceState]:
        """Every service's status script, one run for all hosts; each output follows a marker line."""
        marker = "@@toppipe-service "
        specs = {(host, spec.name): spec for host, spec in services}
        scripts: dict[str, list[str]] = {}
        for (host, name), spec in specs.items():
            command = runtime_for(site.host(host), spec).status_command(spec)
            scripts.setdefault(host, []).append(f"echo {shlex.quote(marker + name)}; {command}")
        found = {}
        for host, output in self._shell(site, {h: "\n".join(s) for h, s in scripts.items()}).items():
            for chunk in output.split(marker)[1:]:
                name, _, status = chunk.partition("\n")
                found[(host, name)] = runtime_for(site.host(host), specs[(host, name)]).parse_status(status)
        return found

    def missing_files(self, site: Site, paths: dict[str, list[str]]) -> dict[str, list[str]]:
        scripts = {h: "for p in " + " ".join(map(shlex.quote, w)) + '; do [ -f "$p" ] || echo "$p"; done' for h, w in paths.items() if w}
        return {host: output.splitlines() for host, output in self._shell(site, scripts).items()}

    def home_dirs(self, site: Site) -> dict[str, str]:
        remote = {h.name: 'echo "$HOME"' for h in site.hosts if not h.is_local}
        return {host: output.strip() for host, output in self._shell(site, remote).items()}

    def leftovers(self, site: Site) -> dict[str, list[int]]:
        scripts = {h.name: get_runtime(h.runtime).leftovers_command(site.name) for h in site.hosts}
        return {host: [int(p) for p in output.split()] for host, output in self._shell(site, scripts).items()}
