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
from collections.abc import Iterator
from pathlib import Path

from pyinfra.api import Config, FactBase, Inventory, State, operation
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.operation import add_op
from pyinfra.api.operations import run_ops
from pyinfra.api.state import BaseStateCallback
from pyinfra.operations import files

from deploy.engine.base import FAILED_EARLIER, ActionResult, Engine, Outcome, Progress, RunReport
from deploy.files import write_private
from deploy.inventory import Host, Site
from deploy.resources import Absent, Action, Directory, Ensure, File, Service, ServiceSpec, Upload
from deploy.runtime import ServiceState, get_runtime, runtime_for

for _noisy in ("pyinfra", "paramiko"):
    logging.getLogger(_noisy).setLevel(logging.CRITICAL)


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
def _service(spec_status: str, start: str, stop: str, digest: str, running: bool) -> Iterator[str]:
    from pyinfra import host

    state = ServiceState.parse(host.get_fact(ShellOutput, script=spec_status))
    if running:
        if not state.answering or state.digest != digest:
            yield _bash(start)
    elif state.running:
        yield _bash(stop)


def _result(action: Action, meta) -> ActionResult:
    """An action's outcome from its completed (or never run) pyinfra operation."""
    if not meta.is_complete():
        return ActionResult(action, Outcome.SKIPPED, FAILED_EARLIER)
    if meta.did_error():
        lines = [line for line in (meta.stderr or meta.stdout).strip().splitlines() if line.strip()]
        shown = lines[:1] + lines[-2:] if len(lines) > 3 else lines
        return ActionResult(action, Outcome.FAILED, " / ".join(shown) or "failed with no output")
    return ActionResult(action, Outcome.CHANGED if meta.did_change() else Outcome.UNCHANGED)


class _ConnectErrors(BaseStateCallback):
    """Keeps why each host could not be reached (pyinfra only logs it)."""

    def __init__(self) -> None:
        self.reasons: dict[str, str] = {}

    def host_connect_error(self, state: State, host, error) -> None:
        self.reasons[host.name] = str(error.args[0] if error.args else error).strip()


class _Progress(BaseStateCallback):
    """Reports each host's operations as they complete.

    Hosts run their operations independently (pyinfra's no-wait mode), and
    pyinfra completes an operation only after its callbacks, so an operation
    is reported when the host starts its next one; the last ones at the end.
    """

    def __init__(self, ops: dict[tuple[str, str], Action], progress: Progress | None):
        self.ops, self.progress = ops, progress
        self.reported: set[tuple[str, str]] = set()
        self.previous: dict[str, str] = {}

    def operation_host_start(self, state: State, host, op_hash: str) -> None:
        earlier = self.previous.get(host.name)
        if earlier is not None:
            self.report(state, host, (host.name, earlier))
        if (host.name, op_hash) in self.ops:
            self.previous[host.name] = op_hash

    def report(self, state: State, host, key: tuple[str, str]) -> ActionResult:
        result = _result(self.ops[key], state.get_op_data_for_host(host, key[1]).operation_meta)
        if key not in self.reported:
            self.reported.add(key)
            if self.progress:
                self.progress(result)
        return result


def _jump_config(site: Site) -> Path:
    """An ssh config naming each host's jump host, which pyinfra's ssh client honours."""
    lines = [f"Host {h.address}\n    ProxyJump {h.jump}\n" for h in site.hosts if h.jump]
    path = site.state_dir / "ssh_config"
    write_private(path, "".join(lines))
    return path


class PyinfraEngine(Engine):
    """Runs actions over pyinfra's ``@local`` and ssh connectors."""

    name = "pyinfra"

    # -- inventory -------------------------------------------------------

    def __init__(self) -> None:
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
                data["ssh_config_file"] = str(_jump_config(site))
            names.append((host.name, data))
        return Inventory((names, {}))

    def _connect(self, site: Site, check_for_changes: bool) -> tuple[State, dict[str, object], dict[str, str]]:
        """Connect to every host not already found unreachable; reuse the connections until :meth:`close`."""
        unreachable = self._unreachable.setdefault(site.name, {})
        if site.name in self._connected:
            state, by_name = self._connected[site.name]
            state.check_for_changes = check_for_changes
            return state, by_name, dict(unreachable)
        state = State(self._inventory(site, skip=unreachable), Config(CONNECT_TIMEOUT=10, FAIL_PERCENT=100), check_for_changes=check_for_changes)
        errors = _ConnectErrors()
        state.add_callback_handler(errors)
        try:
            connect_all(state)
        except PyinfraError:
            pass  # no host answered: each is reported below with its reason
        by_name = {}
        for host in state.inventory:
            name = host.data.get("toppipe_host")
            if host in state.activated_hosts:
                by_name[name] = host
            else:
                unreachable[name] = f"cannot connect: {errors.reasons.get(host.name, 'no reason given')}"
        self._connected[site.name] = (state, by_name)
        return state, by_name, dict(unreachable)

    # -- operations ------------------------------------------------------

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
            result = add_op(
                state, _service, spec_status=runtime.status_command(spec), start=runtime.start_command(spec),
                stop=runtime.stop_command(spec), digest=spec.digest(), running=resource.running, **kwargs,
            )  # fmt: skip
        else:
            raise TypeError(f"no pyinfra translation for {resource!r}")
        return result[host]._hash

    def _build(self, site: Site, actions: list[Action], check_for_changes: bool):
        state, hosts, unreachable = self._connect(site, check_for_changes)
        ops: dict[tuple[str, str], Action] = {}
        metas = []
        paths: dict[str, list[str]] = {}
        for action in actions:
            if isinstance(action.resource, (Directory, File)) and action.host in hosts:
                paths.setdefault(action.host, []).append(action.resource.path)
        known = {name: _path_states(hosts[name], found) for name, found in paths.items()}
        for action in actions:
            host = hosts.get(action.host)
            if host is None:
                continue
            op_hash = self._add(state, host, action, site, site.host(action.host), known.get(action.host))
            ops[(host.name, op_hash)] = action
            metas.append((action, host, op_hash))
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
            report.results.append(callback.report(state, host, (host.name, op_hash)))
        for action in actions:
            if action.host in report.unreachable:
                report.results.append(ActionResult(action, Outcome.SKIPPED, report.unreachable[action.host]))
        return report

    def plan(self, site: Site, actions: list[Action]) -> RunReport:
        state, _, metas, unreachable = self._build(site, actions, check_for_changes=True)
        report = RunReport(unreachable=unreachable)
        for action, host, op_hash in metas:
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
        state, hosts, _ = self._connect(site, check_for_changes=True)
        return {
            name: host.get_fact(ShellOutput, script='echo "$HOME"').strip()
            for name, host in hosts.items()
            if not site.host(name).is_local
        }

    def leftovers(self, site: Site) -> dict[str, list[int]]:
        state, hosts, _ = self._connect(site, check_for_changes=True)
        found = {}
        for name, host in hosts.items():
            runtime = get_runtime(site.host(name).runtime)
            output = host.get_fact(ShellOutput, script=runtime.leftovers_command(site.name))
            found[name] = [int(p) for p in output.split()]
        return found
