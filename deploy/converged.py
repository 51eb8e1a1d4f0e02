"""The fast path of ``up`` and ``plan``: a host known to be converged, from one round trip.

After a successful ``up`` each host keeps a record, ``<root>/.toppipe-converged``
(0600): on its first line (JSON) the digest of every action it converged to and,
per Ansible role, the digest of the role's inputs and the paths its tasks
manage; then those paths, one a line, for the probe. The next ``up`` computes
the digest again, on the client, and sends each host one script (all hosts side
by side) that prints the record and probes what the host's operations would
judge: the managed paths' kind, mode and hash (toppipe's and the Ansible
roles'), each Ensure's own check (but those that take a service's client: see
``Ensure.probed``), each service's status. A host whose digest
matches and whose probe finds nothing to do is unchanged: its operations are not
run. Any other host, or any doubt (no record, an unreadable one, no answer),
goes through the full run, as before.

An Ansible role runs when its inputs changed, when there is no record of its
last run, or when a path it manages drifted: a file or folder missing, its
content (sha1, as Ansible reports it) or asked-for mode changed, an absent one
back. Tasks that manage nothing a probe can look at (asserts, shell probes,
users, packages) are not run again on a host whose role inputs are unchanged
and whose managed paths are in place: what they check is assumed to stay true
between two ``up`` s, and ``up --full`` runs them all. Nothing here runs
anything; the engine runs the scripts.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import posixpath
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from deploy.inventory import Site
from deploy.resources import Absent, Action, AnsibleTasks, Directory, Ensure, File, Service, Upload
from deploy.runtime import ServiceState, Step, next_step, runtime_for

RECORD_NAME = ".toppipe-converged"

#: What a host that took the fast path says, in the output and the journal.
FAST = "converged (1 round trip)"

#: Why a host runs in full when the user asked for it (``up --full``).
ASKED = "asked for (--full)"

#: What an Ansible role that is not run says, on a host that runs in full.
ROLE_IN_PLACE = "not run: inputs unchanged, no drift in what it manages"


def record_path(root: str) -> str:
    return posixpath.join(root, RECORD_NAME)


def _file_digest(path: str | Path) -> str:
    """The sha256 of a client file, hashed once per version of it (the probe asks twice per up)."""
    found = os.stat(path)
    return _hashed(str(path), found.st_mtime_ns, found.st_size)


@functools.lru_cache(maxsize=64)
def _hashed(path: str, mtime_ns: int, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ansible_digest(resource: AnsibleTasks) -> str:
    """The inputs of an Ansible role's run: its task file, variables, and every file of its folder."""
    digest = hashlib.sha256(json.dumps([resource.role, resource.tasks, resource.variables], default=str).encode())
    folder = Path(resource.folder)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def identity(action: Action) -> list:
    """What makes *action* the action it is, for the host's digest (content by hash)."""
    r = action.resource
    if isinstance(r, File):
        return ["file", r.path, hashlib.sha256(r.content).hexdigest(), r.mode]
    if isinstance(r, Upload):
        return ["upload", r.path, r.mode, r.named_by_content, None if r.named_by_content else _file_digest(r.source)]
    if isinstance(r, Directory):
        return ["directory", r.path, r.mode]
    if isinstance(r, Absent):
        return ["absent", r.path]
    if isinstance(r, Ensure):
        return ["ensure", r.name, r.check, r.apply]
    if isinstance(r, Service):
        return ["service", r.spec.name, r.spec.digest(), r.running, r.spec.runtime]
    if isinstance(r, AnsibleTasks):
        return ["ansible", r.role, ansible_digest(r)]
    raise TypeError(f"no identity for {r!r}")


def host_digest(actions: list[Action]) -> str:
    """The digest of all of one host's actions, in order."""
    blob = json.dumps([[a.role, identity(a)] for a in actions], default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def record(actions: list[Action], ansible: dict[str, dict] | None = None) -> dict:
    """What a host keeps after it converged to *actions*; *ansible*: per role, ``{"inputs":
    its digest, "paths": what it manages}`` (see :func:`role_entry`)."""
    return {"digest": host_digest(actions), "ansible": ansible or {}}


def role_entry(resource: AnsibleTasks, ran: list[dict], before: dict | None) -> dict:
    """The record of an Ansible role that just ran and reported managing *ran*; the paths of
    its run *before* are kept when its inputs are the same (a task may manage a path only
    when it is missing)."""
    inputs = ansible_digest(resource)
    paths = {e["path"]: e for e in (before or {}).get("paths", [])} if (before or {}).get("inputs") == inputs else {}
    paths.update({e["path"]: e for e in ran})
    return {"inputs": inputs, "paths": [paths[p] for p in sorted(paths)]}


def write_script(root: str, content: dict) -> str:
    """Bash that replaces the host's record with *content* (private from the first byte): its
    JSON on the first line, then each path its Ansible roles manage, for the probe."""
    managed = sorted({e["path"] for entry in content.get("ansible", {}).values() for e in entry.get("paths", [])})
    text = "\n".join([json.dumps(content, sort_keys=True), *managed]) + "\n"
    path = shlex.quote(record_path(root))
    return f"umask 077; mkdir -p {shlex.quote(root)} && printf '%s' {shlex.quote(text)} > {path}.new && mv -f {path}.new {path}"


def forget_script(root: str) -> str:
    """Bash that removes the host's record (before a full run that may stop half way)."""
    return f"rm -f {shlex.quote(record_path(root))}"


def _checked_paths(actions: list[Action]) -> list[str]:
    return list(dict.fromkeys(a.resource.path for a in actions if isinstance(a.resource, (Directory, File, Upload, Absent))))


def probe_script(site: Site, root: str, actions: list[Action]) -> str:
    """Bash that prints, for one host: its record (``R``), its paths and its Ansible roles' (``P``),
    their hashes (``H`` sha256, ``Q`` sha1), each Ensure's verdict (``E``) and each service's
    status (``S``), checks side by side."""
    paths = _checked_paths(actions)
    files = [a.resource.path for a in actions if isinstance(a.resource, (File, Upload)) and not (isinstance(a.resource, Upload) and a.resource.named_by_content)]
    quoted = " ".join(shlex.quote(p) for p in paths)
    kept = shlex.quote(record_path(root))
    lines = [
        f"printf 'R %s\\n' \"$(head -n 1 {kept} 2>/dev/null)\"",
        # the paths the host's Ansible roles manage, as the record lists them: kind, mode, sha1 (Q)
        f"managed=(); if [ -f {kept} ]; then mapfile -t managed < <(tail -n +2 {kept}); fi",
        'if [ ${#managed[@]} -gt 0 ]; then stat -L -c \'P %F|%a|%n\' -- "${managed[@]}" 2>/dev/null; sha1sum -- "${managed[@]}" 2>/dev/null | sed \'s/^/Q /\'; fi',
    ]
    if paths:
        lines.append(f"stat -L -c 'P %F|%a|%n' -- {quoted} 2>/dev/null || true")
    if files:
        lines.append(f"sha256sum -- {' '.join(shlex.quote(p) for p in dict.fromkeys(files))} 2>/dev/null | sed 's/^/H /' || true")
    for i, action in enumerate(actions):
        r = action.resource
        if isinstance(r, Ensure) and r.probed:
            lines.append(f"e{i}() {{\n{r.check}\n}}")
            lines.append(f"( if ( e{i} ) </dev/null >/dev/null 2>&1; then echo 'E {i} 0'; else echo 'E {i} 1'; fi ) &")
        elif isinstance(r, Service):
            status = runtime_for(site.host(action.host), r.spec).status_command(r.spec)
            lines.append(f"s{i}() {{\n{status}\n}}")
            lines.append(f"( line=$(s{i} </dev/null 2>/dev/null | tail -n 1); printf 'S {i} %s\\n' \"$line\" ) &")
    lines += ["wait", "true"]
    return "\n".join(lines)


@dataclass
class Verdict:
    """What one host's probe found: converged, or the reasons it must run in full."""

    host: str
    reasons: list[str] = field(default_factory=list)
    had_record: bool = False
    ansible: dict[str, str] = field(default_factory=dict)  # role -> why it runs (only roles that run)
    before: dict[str, dict] = field(default_factory=dict)  # role -> its record from the last up
    restarts: list[str] = field(default_factory=list)  # services running now that the full run starts again

    @property
    def converged(self) -> bool:
        return not self.reasons and not self.ansible

    def role_runs(self, role: str) -> bool:
        """Whether Ansible role *role* runs on this host (it does on a host without a record of it)."""
        return role in self.ansible or role not in self.before


@dataclass
class _Probe:
    """One host's probe output, parsed."""

    found: dict | None = None  # the record (None: none, or unreadable)
    present: bool = False  # whether there was a record
    paths: dict[str, tuple[str, str]] = field(default_factory=dict)  # path -> (kind F/D/O, mode)
    sha256: dict[str, str] = field(default_factory=dict)
    sha1: dict[str, str] = field(default_factory=dict)
    ensures: dict[int, str] = field(default_factory=dict)
    services: dict[int, str] = field(default_factory=dict)


def _parse(output: str) -> _Probe:
    probe = _Probe()
    for line in output.splitlines():
        tag, _, rest = line.partition(" ")
        if tag == "R":
            probe.present = bool(rest.strip())
            try:
                found = json.loads(rest) if probe.present else None
            except ValueError:
                found = None
            probe.found = found if isinstance(found, dict) else None
        elif tag == "P":
            kind, mode, path = (rest.split("|", 2) + ["", ""])[:3]
            probe.paths[path] = ("F" if kind.startswith("regular") else "D" if kind == "directory" else "O", mode)
        elif tag in ("H", "Q"):
            digest, _, path = rest.partition("  ")
            (probe.sha256 if tag == "H" else probe.sha1)[path] = digest
        elif tag in ("E", "S"):
            index, _, value = rest.partition(" ")
            (probe.ensures if tag == "E" else probe.services)[int(index)] = value
    return probe


def _drift(i: int, action: Action, probe: _Probe) -> str | None:
    """Why the full run would change *action* (None: it would not)."""
    r = action.resource
    paths, hashes = probe.paths, probe.sha256
    kind, mode = paths.get(getattr(r, "path", ""), ("N", ""))
    if isinstance(r, Directory):
        return None if kind == "D" and mode == f"{r.mode:o}" else f"folder {r.path} missing or its mode differs"
    if isinstance(r, File):
        same = kind == "F" and hashes.get(r.path) == hashlib.sha256(r.content).hexdigest() and mode == f"{r.mode:o}"
        return None if same else f"file {r.path} differs"
    if isinstance(r, Upload) and r.named_by_content:
        return None if kind == "F" else f"{r.path} missing"
    if isinstance(r, Upload):
        same = kind == "F" and hashes.get(r.path) == _file_digest(r.source) and mode == f"{r.mode:o}"
        return None if same else f"file {r.path} differs"
    if isinstance(r, Absent):
        return None if kind == "N" else f"{r.path} exists"
    if isinstance(r, Ensure):
        return None if not r.probed or probe.ensures.get(i) == "0" else f"{r.name}: its check fails"
    if isinstance(r, Service):
        if i not in probe.services:
            return f"{r.spec.name}: no status"
        step = next_step(ServiceState.parse(probe.services[i]), r.spec.digest(), r.running)
        return None if step is Step.NOTHING else f"{r.spec.name}: would {step.value}"
    if isinstance(r, AnsibleTasks):
        return None  # judged by its own record, see _role_drift
    return f"{r.describe()}: cannot be probed"


def _restarts(service: Service, status: str) -> bool:
    """Whether the full run stops the running *service* (its *status* line) to start it again."""
    state = ServiceState.parse(status)
    return state.running and next_step(state, service.spec.digest(), service.running) is Step.START


def _managed_drift(entry: dict, probe: _Probe) -> str | None:
    """Why one path an Ansible role manages is not as its last run left it (None: it is)."""
    path, wanted = entry.get("path", ""), entry.get("kind")
    kind, mode = probe.paths.get(path, ("N", ""))
    if wanted == "absent":
        return None if kind == "N" else f"drift: {path} exists"
    if kind != {"file": "F", "directory": "D"}.get(wanted):
        return f"drift: {path} missing" if kind == "N" else f"drift: {path} is no longer a {wanted}"
    if entry.get("sha1") and probe.sha1.get(path) != entry["sha1"]:
        return f"drift: {path} changed"
    if entry.get("mode") and mode != entry["mode"]:
        return f"drift: {path} has mode {mode}, not {entry['mode']}"
    return None


def _role_drift(resource: AnsibleTasks, entry: object, probe: _Probe) -> str | None:
    """Why Ansible role *resource* runs again on a host, from its record *entry* (None: it does not)."""
    if not isinstance(entry, dict):
        return "no record of an earlier run"
    if entry.get("inputs") != ansible_digest(resource):
        return "its inputs changed"
    return next(filter(None, (_managed_drift(e, probe) for e in entry.get("paths", []))), None)


def judge(host: str, actions: list[Action], output: str | None) -> Verdict:
    """The verdict on *host* from its probe's *output* (None: it did not answer)."""
    if output is None:
        return Verdict(host, ["no answer to the probe"])
    probe = _parse(output)
    verdict = Verdict(host, had_record=probe.present)
    if probe.found is None:
        verdict.reasons.append("no record of an earlier up" if not probe.present else "its record is unreadable")
    elif probe.found.get("digest") != host_digest(actions):
        verdict.reasons.append("its inputs changed")
    for i, action in enumerate(actions):
        why = _drift(i, action, probe)
        if why:
            verdict.reasons.append(why)
            if isinstance(action.resource, Service) and _restarts(action.resource, probe.services.get(i, "")):
                verdict.restarts.append(action.resource.spec.name)
    before = (probe.found or {}).get("ansible")
    before = before if isinstance(before, dict) else {}
    for action in actions:
        r = action.resource
        if not isinstance(r, AnsibleTasks):
            continue
        entry = before.get(r.role)
        why = _role_drift(r, entry, probe)
        if why:
            verdict.ansible[r.role] = why
            if why.startswith("drift:"):
                verdict.reasons.append(f"{why} (ansible role {r.role})")
        if isinstance(entry, dict):
            verdict.before[r.role] = entry
    return verdict
