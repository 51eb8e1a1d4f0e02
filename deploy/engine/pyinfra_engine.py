"""The pyinfra engine: the only module of toppipe that imports pyinfra.

pyinfra calls its Python API "mostly stable"; keeping every use of it here
means a pyinfra upgrade touches one file. Resources become pyinfra
operations; facts are shell commands with small parsers.
"""

from __future__ import annotations

import hashlib
import io
import logging
import posixpath
import shlex
import socket
from collections.abc import Iterator
from pathlib import Path

from pyinfra.api import Config, FactBase, Inventory, State, operation
from pyinfra.api.connect import disconnect_all
from paramiko import AuthenticationException, BadHostKeyException, SSHException
from pyinfra.api.exceptions import ConnectError, PyinfraError
from pyinfra.api.operation import add_op
from pyinfra.api.operations import run_ops
from pyinfra.api.state import BaseStateCallback
from pyinfra.operations import files

from deploy import host_shell
from deploy.engine.base import FAILED_EARLIER, ActionResult, Engine, Outcome, Progress, RunReport
from deploy.engine.batches import host_batches, prerequisites
from deploy.inventory import Host, Site, jumps
from deploy.resources import Absent, Action, Directory, Ensure, File, Service, ServiceSpec, Upload
from deploy.runtime import ServiceState, Step, get_runtime, next_step, refusal, runtime_for, side_by_side

for _noisy in ("pyinfra", "paramiko"):
    logging.getLogger(_noisy).setLevel(logging.CRITICAL)

#: Seconds to wait for a host's ssh to answer (the Ansible engine waits as long).
CONNECT_TIMEOUT = 10


def _bash(script: str) -> str:
    return "bash -c " + shlex.quote(script)


class ShellOutput(FactBase):
    """The stdout of a bash script (which must itself exit 0)."""

    def command(self, script: str) -> str:  # type: ignore[override]
        return _bash(script)

    def process(self, output: list[str]) -> str:
        return "\n".join(output)

    def default(self) -> str:
        return ""


@operation(is_idempotent=True)
def _ensure(check: str, apply: str) -> Iterator[str]:
    from pyinfra import host

    verdict = host.get_fact(ShellOutput, script=f"if {check} >/dev/null 2>&1; then echo yes; else echo no; fi")
    if verdict.strip() != "yes":
        yield _bash(apply)


def _quiet_host_failures() -> None:
    """A host whose operation failed ends its greenlet with PyinfraError, which gevent's hub
    would print as a traceback; the run report names that host and why instead."""
    import gevent

    hub = gevent.get_hub()
    if not issubclass(PyinfraError, hub.NOT_ERROR):
        hub.NOT_ERROR = (*hub.NOT_ERROR, PyinfraError)


@operation(is_idempotent=True)
def _ship(src: str, dest: str, mode: str) -> Iterator:
    """Upload a file whose name holds its content's digest: sent when absent, renamed into place whole."""
    from pyinfra import host
    from pyinfra.api.command import FileUploadCommand

    quoted = shlex.quote(dest)
    if host.get_fact(ShellOutput, script=f"[ -f {quoted} ] && echo yes || true").strip() != "yes":
        yield f"mkdir -p {shlex.quote(posixpath.dirname(dest))}"
        yield FileUploadCommand(src, dest + ".part")
        yield f"chmod {mode} {quoted}.part && mv -f {quoted}.part {quoted}"


#: What a host says about one path before a run: kind (F file, D folder, N none), sha256, mode.
PathState = tuple[str, str, str]
_NONE: PathState = ("N", "-", "-")


def _path_states(host, paths: list[str]) -> dict[str, PathState]:
    """Kind, content hash and mode of every one of *paths* on *host*, in one round trip."""
    if not paths:
        return {}
    script = (
        "for p in " + " ".join(shlex.quote(p) for p in paths) + "; do "
        'if [ -f "$p" ]; then echo "F $(sha256sum < "$p" 2>/dev/null | cut -c1-64) $(stat -c %a "$p") $p"; '
        'elif [ -d "$p" ]; then echo "D - $(stat -c %a "$p") $p"; else echo "N - - $p"; fi; done'
    )
    found = {}
    for line in host.get_fact(ShellOutput, script=script).splitlines():
        kind, digest, mode, path = (line.split(" ", 3) + ["", "", "", ""])[:4]
        found[path] = (kind, digest or "-", mode or "-")
    return found


@operation(is_idempotent=True)
def _directory(path: str, mode: str, known: PathState) -> Iterator[str]:
    """A folder with *mode*, judged from *known* (read for all paths at once before the run)."""
    quoted = shlex.quote(path)
    if known[0] != "D":
        yield f"mkdir -p {quoted} && chmod {mode} {quoted}"
    elif known[2] != mode:
        yield f"chmod {mode} {quoted}"


@operation(is_idempotent=True)
def _file(content: bytes, dest: str, mode: str, known: PathState) -> Iterator:
    """A file with exactly *content* and *mode*, judged from *known*. A new file is made
    private before its content arrives, so a secret is never readable by others."""
    from pyinfra.api.command import FileUploadCommand

    quoted = shlex.quote(dest)
    same = known[0] == "F" and known[1] == hashlib.sha256(content).hexdigest()
    if not same:
        yield f"mkdir -p {shlex.quote(posixpath.dirname(dest))} && (umask 077; touch {quoted}) && chmod 600 {quoted}"
        yield FileUploadCommand(io.BytesIO(content), dest)
    if not same or known[2] != mode:
        yield f"chmod {mode} {quoted}"


@operation(is_idempotent=True)
def _absent(path: str) -> Iterator[str]:
    from pyinfra import host

    quoted = shlex.quote(path)
    if host.get_fact(ShellOutput, script=f"[ -e {quoted} ] && echo yes || true").strip() == "yes":
        yield f"rm -rf {quoted}"


@operation(is_idempotent=True)
def _service(spec_status: str, commands: dict[Step, str], digest: str, running: bool, restart: bool = False) -> Iterator[str]:
    """Start, keep (remember as the fallback) or stop a service, judged from its status."""
    from pyinfra import host

    step = next_step(ServiceState.parse(host.get_fact(ShellOutput, script=spec_status)), digest, running, restart)
    if step is not Step.NOTHING:
        yield _bash(commands[step])


@operation(is_idempotent=True)
def _services(members: list[tuple[str, str, dict[Step, str], str, bool, bool, tuple[str, ...]]]) -> Iterator[str]:
    """Several services' steps side by side (:mod:`deploy.runtime.side_by_side`), each judged from its status;
    a member is (name, status script, commands, digest, running, restart, prerequisites)."""
    from pyinfra import host

    asked = side_by_side.statuses({name: status for name, status, *_ in members})  # one round trip for all
    statuses = side_by_side.parse_statuses(host.get_fact(ShellOutput, script=asked))
    todo = []
    for name, _, commands, digest, running, restart, after in members:
        step = next_step(ServiceState.parse(statuses.get(name, "")), digest, running, restart)
        if step is not Step.NOTHING:
            todo.append(side_by_side.Member(name, commands[step], after))
    if todo:
        yield _bash(side_by_side.script(todo))


def _failure(output: str) -> str:
    """One line from a failed command's output: its first line and its last two."""
    lines = [line for line in output.strip().splitlines() if line.strip()]
    shown = lines[:1] + lines[-2:] if len(lines) > 3 else lines
    return " / ".join(shown) or "failed with no output"


def _result(action: Action, meta) -> ActionResult:
    """An action's outcome from its completed (or never run) pyinfra operation."""
    if not meta.is_complete():
        return ActionResult(action, Outcome.SKIPPED, FAILED_EARLIER)
    if meta.did_error():
        return ActionResult(action, Outcome.FAILED, _failure(meta.stderr or meta.stdout))
    if isinstance(action.resource, Service) and (why := refusal(meta.stdout)):
        return ActionResult(action, Outcome.REFUSED, why)
    return ActionResult(action, Outcome.CHANGED if meta.did_change() else Outcome.UNCHANGED)


def _batch_results(actions: tuple[Action, ...], meta) -> list[ActionResult]:
    """Each service's outcome from the operation that ran a batch of them side by side."""
    if len(actions) == 1:
        return [_result(actions[0], meta)]
    if not meta.is_complete():
        return [ActionResult(a, Outcome.SKIPPED, FAILED_EARLIER) for a in actions]
    found = side_by_side.parse(meta.stdout)
    results = []
    for action in actions:
        spec = action.resource.spec  # type: ignore[union-attr]
        member = found.get(spec.name)
        if member is None and meta.did_error() and not found:  # the script itself failed
            results.append(ActionResult(action, Outcome.FAILED, _failure(meta.stderr or meta.stdout)))
        elif member is None:  # already as wanted: nothing was run
            results.append(ActionResult(action, Outcome.UNCHANGED))
        elif member.rc is None:
            failed = [dep for dep in spec.after if dep in found and found[dep].rc != 0]
            results.append(ActionResult(action, Outcome.SKIPPED, f"not run: {', '.join(failed) or 'a service before it'} did not start"))
        elif member.rc != 0:
            results.append(ActionResult(action, Outcome.FAILED, _failure(member.stderr or member.stdout)))
        elif why := refusal(member.stdout):
            results.append(ActionResult(action, Outcome.REFUSED, why))
        else:
            results.append(ActionResult(action, Outcome.CHANGED))
    return results


class _Progress(BaseStateCallback):
    """Reports each host's operations as they complete.

    Hosts run their operations independently (pyinfra's no-wait mode), and
    pyinfra completes an operation only after its callbacks, so an operation
    is reported when the host starts its next one; the last ones at the end.
    """

    def __init__(self, ops: dict[tuple[str, str], tuple[Action, ...]], progress: Progress | None):
        self.ops, self.progress = ops, progress
        self.reported: set[tuple[str, str]] = set()
        self.previous: dict[str, str] = {}

    def operation_host_start(self, state: State, host, op_hash: str) -> None:
        earlier = self.previous.get(host.name)
        if earlier is not None:
            self.report(state, host, (host.name, earlier))
        if (host.name, op_hash) in self.ops:
            self.previous[host.name] = op_hash

    def report(self, state: State, host, key: tuple[str, str]) -> list[ActionResult]:
        results = _batch_results(self.ops[key], state.get_op_data_for_host(host, key[1]).operation_meta)
        if key not in self.reported:
            self.reported.add(key)
            for result in results if self.progress else ():
                self.progress(result)
        return results


def connect_each(state: State) -> dict[object, BaseException]:
    """Connect to every host of *state* side by side; the error of each host that failed.

    pyinfra's ``connect_all`` re-raises the first error that is not a ``ConnectError``
    (a missing or unreadable key file) from inside the ssh connector: gevent prints its
    traceback and the hosts after it are never activated. Here each error stays with its host.
    """
    import gevent

    failures: dict[object, BaseException] = {}

    def connect(host) -> None:
        try:
            host.connect(show_errors=False, raise_exceptions=True)
        except Exception as error:  # noqa: BLE001 - whatever the ssh stack raised, it is this host's reason
            failures[host] = error

    gevent.joinall([state.pool.spawn(connect, host) for host in state.inventory])
    for host in state.inventory:
        if host.connected:
            state.activate_host(host)
    return failures


def why_unreachable(host: Host, error: BaseException | None) -> str:
    """One line: why ssh could not reach *host*, and what to change."""
    where = f"{host.address}:{host.port or 22}"
    cause = error.__context__ if isinstance(error, ConnectError) and error.__context__ else error
    text = " ".join(str(cause or "no reason given").split())
    key, known = host.ssh_key or "the ssh key", host.known_hosts or "~/.ssh/known_hosts"
    if isinstance(error, PyinfraError) and not isinstance(error, ConnectError):  # pyinfra reading the key file
        if "No such private key file" in text:
            return f"cannot connect: the ssh key file {key} is missing; fix ansible_ssh_private_key_file"
        if "is encrypted" in text:
            return f"cannot connect: the ssh key {key} needs a passphrase, which deploy cannot ask for; use a key without one"
        if "Invalid private key" in text or "Invalid key" in text:
            return f"cannot connect: {key} is not a private key ssh can read; point ansible_ssh_private_key_file at your private key"
    if isinstance(cause, BadHostKeyException) or "does not match" in text:
        return (f"cannot connect: {host.address} shows another host key than {known} holds; if the host was reinstalled, "
                f"ssh-keygen -f {known} -R {host.address} and add its new key, else someone may be in between")  # fmt: skip
    if "No host key for" in text and host.known_hosts and not Path(host.known_hosts).is_file():
        return f"cannot connect: the known-hosts file {known} is missing; fix UserKnownHostsFile in ansible_ssh_common_args"
    if "No host key for" in text:
        return f"cannot connect: {known} has no host key for {host.address}; add it (ssh-keyscan, after checking its fingerprint)"
    if isinstance(cause, AuthenticationException):
        user = host.user or "the ssh user"
        return f"cannot connect: {user}@{where} refused the key {key}; add its .pub to authorized_keys there, or fix ansible_user"
    if isinstance(cause, socket.gaierror):
        return f"cannot connect: no host is called {host.address} ({text}); fix ansible_host"
    if isinstance(cause, (TimeoutError, socket.timeout)) or "timed out" in text:
        return f"cannot connect: no answer from {where} within {CONNECT_TIMEOUT} s; is the host up and ansible_host right?"
    if isinstance(cause, OSError):
        return f"cannot connect: nothing accepts ssh at {where} ({text}); is sshd running there, and ansible_host/ansible_port right?"
    if isinstance(cause, (SSHException, EOFError)):
        return f"cannot connect: ssh with {where} failed ({text}); is it an ssh server?"
    return f"cannot connect: {text}"


class PyinfraEngine(Engine):
    """Runs actions over pyinfra's ``@local`` and ssh connectors."""

    name = "pyinfra"

    # -- inventory -------------------------------------------------------

    def __init__(self) -> None:
        host_shell.install_pyinfra_hook()
        self._unreachable: dict[str, dict[str, str]] = {}
        self._connected: dict[str, tuple[State, dict[str, object]]] = {}

    def unreachable(self, site: Site) -> dict[str, str]:
        return dict(self._unreachable.get(site.name, {}))

    def close(self) -> None:
        """Close every connection this engine opened."""
        for state, _ in self._connected.values():
            disconnect_all(state)
        self._connected.clear()

    def _inventory(self, site: Site, skip: dict[str, str]) -> Inventory:
        names = []
        for host in site.hosts:
            if host.name in skip:
                continue
            if host.is_local:
                names.append(("@local", {"toppipe_host": host.name}))
                continue
            data = {"toppipe_host": host.name, "ssh_hostname": host.address}
            if host.user:
                data["ssh_user"] = host.user
            if host.port:
                data["ssh_port"] = host.port
            if host.ssh_key:
                data["ssh_key"] = host.ssh_key
            if host.known_hosts:
                data["ssh_known_hosts_file"] = host.known_hosts
            data["ssh_strict_host_key_checking"] = "yes"
            if host.jump:
                data["ssh_config_file"] = str(jumps.ssh_config(site))
            names.append((host.name, data))
        return Inventory((names, {}))

    def _connect(self, site: Site, check_for_changes: bool) -> tuple[State, dict[str, object], dict[str, str]]:
        """Connect to every host not already found unreachable; reuse the connections until :meth:`close`."""
        unreachable = self._unreachable.setdefault(site.name, {})
        if site.name in self._connected:
            state, by_name = self._connected[site.name]
            state.check_for_changes = check_for_changes
            return state, by_name, dict(unreachable)
        state = State(self._inventory(site, skip=unreachable), Config(CONNECT_TIMEOUT=CONNECT_TIMEOUT, FAIL_PERCENT=100), check_for_changes=check_for_changes)
        failures = connect_each(state)
        by_name = {}
        for host in state.inventory:
            name = host.data.get("toppipe_host")
            if host in state.activated_hosts:
                by_name[name] = host
            else:
                unreachable[name] = why_unreachable(site.host(name), failures.get(host))
        self._connected[site.name] = (state, by_name)
        return state, by_name, dict(unreachable)

    # -- operations ------------------------------------------------------

    def _add_batch(self, state: State, host, batch: list[Action], site: Site, site_host: Host) -> str:
        """One operation starting or stopping the services of *batch* side by side."""
        after = prerequisites(batch)
        members = []
        for action in batch:
            resource = action.resource
            assert isinstance(resource, Service)
            spec = resource.spec
            runtime = runtime_for(site_host, spec)
            commands = {Step.START: runtime.start_command(spec), Step.KEEP: runtime.keep_command(spec),
                        Step.STOP: runtime.stop_command(spec)}  # fmt: skip
            members.append((spec.name, runtime.status_command(spec), commands, spec.digest(), resource.running, resource.restart, after[spec.name]))
        name = f"{batch[0].role}: services side by side ({', '.join(a.resource.describe() for a in batch)})"
        return add_op(state, _services, members=members, host=host, name=name)[host]._hash

    def _add(self, state: State, host, action: Action, site: Site, site_host: Host, known: dict[str, PathState] | None = None) -> str:
        resource = action.resource
        name = f"{action.role}: {resource.describe()}"
        kwargs = {"host": host, "name": name}
        known = known or {}
        if isinstance(resource, Directory):
            result = add_op(state, _directory, path=resource.path, mode=f"{resource.mode:o}",
                            known=known.get(resource.path, _NONE), **kwargs)  # fmt: skip
        elif isinstance(resource, File):
            result = add_op(state, _file, content=resource.content, dest=resource.path, mode=f"{resource.mode:o}",
                            known=known.get(resource.path, _NONE), **kwargs)  # fmt: skip
        elif isinstance(resource, Upload) and resource.named_by_content:
            result = add_op(state, _ship, src=resource.source, dest=resource.path, mode=f"{resource.mode:o}", **kwargs)
        elif isinstance(resource, Upload):
            result = add_op(
                state, files.put, src=resource.source, dest=resource.path,
                mode=f"{resource.mode:o}", add_deploy_dir=False, **kwargs,
            )  # fmt: skip
        elif isinstance(resource, Absent):
            result = add_op(state, _absent, path=resource.path, **kwargs)
        elif isinstance(resource, Ensure):
            result = add_op(state, _ensure, check=resource.check, apply=resource.apply, **kwargs)
        elif isinstance(resource, Service):
            spec = resource.spec
            runtime = runtime_for(site_host, spec)
            commands = {Step.START: runtime.start_command(spec), Step.KEEP: runtime.keep_command(spec),
                        Step.STOP: runtime.stop_command(spec)}  # fmt: skip
            result = add_op(
                state, _service, spec_status=runtime.status_command(spec), commands=commands,
                digest=spec.digest(), running=resource.running, restart=resource.restart, **kwargs,
            )  # fmt: skip
        else:
            raise TypeError(f"no pyinfra translation for {resource!r}")
        return result[host]._hash

    def _build(self, site: Site, actions: list[Action], check_for_changes: bool):
        """The run's operations: per host in order, a batch of services as one (not in a plan, which
        judges each action on its own); *metas* lists (actions, host, operation) in that order."""
        state, hosts, unreachable = self._connect(site, check_for_changes)
        ops: dict[tuple[str, str], tuple[Action, ...]] = {}
        metas = []
        paths: dict[str, list[str]] = {}
        for action in actions:
            if isinstance(action.resource, (Directory, File)) and action.host in hosts:
                paths.setdefault(action.host, []).append(action.resource.path)
        known = {name: _path_states(hosts[name], found) for name, found in paths.items()}
        groups = [[a] for a in actions] if check_for_changes else host_batches(actions)
        for group in groups:
            host = hosts.get(group[0].host)
            if host is None:
                continue
            if len(group) > 1:
                op_hash = self._add_batch(state, host, group, site, site.host(group[0].host))
            else:
                op_hash = self._add(state, host, group[0], site, site.host(group[0].host), known.get(group[0].host))
            ops[(host.name, op_hash)] = tuple(group)
            metas.append((tuple(group), host, op_hash))
        return state, ops, metas, unreachable

    def apply(self, site: Site, actions: list[Action], progress: Progress | None = None) -> RunReport:
        state, ops, metas, unreachable = self._build(site, actions, check_for_changes=False)
        callback = _Progress(ops, progress)
        state.add_callback_handler(callback)
        _quiet_host_failures()
        try:
            run_ops(state, no_wait=True)  # each host at its own pace; none waits for the slowest
        except PyinfraError:
            pass  # every remaining host failed; the per-action results say where and why
        report = RunReport(unreachable=unreachable)
        for _, host, op_hash in metas:
            report.results += callback.report(state, host, (host.name, op_hash))
        for action in actions:
            if action.host in report.unreachable:
                report.results.append(ActionResult(action, Outcome.SKIPPED, report.unreachable[action.host]))
        return report

    def plan(self, site: Site, actions: list[Action]) -> RunReport:
        state, _, metas, unreachable = self._build(site, actions, check_for_changes=True)
        report = RunReport(unreachable=unreachable)
        for (action,), host, op_hash in metas:
            meta = state.get_op_data_for_host(host, op_hash).operation_meta
            report.results.append(ActionResult(action, Outcome.CHANGED if meta.will_change else Outcome.UNCHANGED))
        return report

    # -- facts -----------------------------------------------------------

    def service_states(self, site: Site, services: list[tuple[str, ServiceSpec]]) -> dict[tuple[str, str], ServiceState]:
        state, hosts, _ = self._connect(site, check_for_changes=True)
        found = {}
        for host_name, spec in services:
            host = hosts.get(host_name)
            if host is None:
                continue
            runtime = runtime_for(site.host(host_name), spec)
            found[(host_name, spec.name)] = runtime.parse_status(host.get_fact(ShellOutput, script=runtime.status_command(spec)))
        return found

    def run_scripts(self, site: Site, scripts: dict[str, str]) -> dict[str, str]:
        """Each host's script over its open connection, all hosts side by side: one round trip each."""
        import gevent
        from pyinfra.api.command import StringCommand

        state, hosts, _ = self._connect(site, check_for_changes=True)
        found: dict[str, str] = {}

        def run(name: str, script: str) -> None:
            try:  # the connector itself: a failed fact would mark the host failed for the runs after
                ok, output = hosts[name].run_shell_command(StringCommand(_bash(script)))
            except Exception:  # noqa: BLE001 - whatever failed, this host has no answer
                return
            if ok:
                found[name] = "\n".join(output.stdout_lines)

        gevent.joinall([state.pool.spawn(run, name, script) for name, script in scripts.items() if name in hosts])
        return found

    def missing_files(self, site: Site, paths: dict[str, list[str]]) -> dict[str, list[str]]:
        state, hosts, _ = self._connect(site, check_for_changes=True)
        found = {}
        for name, wanted in paths.items():
            host = hosts.get(name)
            if host is None or not wanted:
                continue
            script = "for p in " + " ".join(shlex.quote(w) for w in wanted) + '; do [ -f "$p" ] || echo "$p"; done'
            found[name] = host.get_fact(ShellOutput, script=script).splitlines()
        return found

    def home_dirs(self, site: Site) -> dict[str, str]:
        if all(h.is_local for h in site.hosts):
            return {}
        remote = {host.name: 'echo "$HOME"' for host in site.hosts if not host.is_local}
        return {name: output.strip() for name, output in self.run_scripts(site, remote).items()}

    def leftovers(self, site: Site) -> dict[str, list[int]]:
        state, hosts, _ = self._connect(site, check_for_changes=True)
        found = {}
        for name, host in hosts.items():
            runtime = get_runtime(site.host(name).runtime)
            output = host.get_fact(ShellOutput, script=runtime.leftovers_command(site.name))
            found[name] = [int(p) for p in output.split()]
        return found
