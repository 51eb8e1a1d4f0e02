"""The fast path of ``up`` and ``plan``: a host known to be converged, from one round trip.

After a successful ``up`` each host keeps a record, ``<root>/.toppipe-converged.json``
(0600): the digest of every action it converged to (and of each Ansible role's
inputs). The next ``up`` computes that digest again, on the client, and sends
each host one script (all hosts side by side) that prints the record and probes
what the host's operations would judge: the managed paths' kind, mode and
sha256, each Ensure's own check, each service's status. A host whose digest
matches and whose probe finds nothing to do is unchanged: its operations are not
run. Any other host, or any doubt (no record, an unreadable one, no answer),
goes through the full run, as before. Nothing here runs anything; the engine
runs the scripts.
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

RECORD_NAME = ".toppipe-converged.json"

#: What a host that took the fast path says, in the output and the journal.
FAST = "converged (1 round trip)"

#: Why a host runs in full when the user asked for it (``up --full``).
ASKED = "asked for (--full)"


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


def record(actions: list[Action]) -> dict:
    """What a host keeps after it converged to *actions*."""
    roles = {a.resource.role: ansible_digest(a.resource) for a in actions if isinstance(a.resource, AnsibleTasks)}
    return {"digest": host_digest(actions), "ansible": roles}


def write_script(root: str, content: dict) -> str:
    """Bash that replaces the host's record with *content* (private from the first byte)."""
    path = shlex.quote(record_path(root))
    return f"umask 077; mkdir -p {shlex.quote(root)} && printf '%s' {shlex.quote(json.dumps(content, sort_keys=True))} > {path}.new && mv -f {path}.new {path}"


def forget_script(root: str) -> str:
    """Bash that removes the host's record (before a full run that may stop half way)."""
    return f"rm -f {shlex.quote(record_path(root))}"


def _checked_paths(actions: list[Action]) -> list[str]:
    return list(dict.fromkeys(a.resource.path for a in actions if isinstance(a.resource, (Directory, File, Upload, Absent))))


def probe_script(site: Site, root: str, actions: list[Action]) -> str:
    """Bash that prints, for one host: its record (``R``), its paths (``P``), their hashes (``H``),
    each Ensure's verdict (``E``) and each service's status (``S``), checks side by side."""
    paths = _checked_paths(actions)
    files = [a.resource.path for a in actions if isinstance(a.resource, (File, Upload)) and not (isinstance(a.resource, Upload) and a.resource.named_by_content)]
    quoted = " ".join(shlex.quote(p) for p in paths)
    lines = [f"printf 'R %s\\n' \"$(cat {shlex.quote(record_path(root))} 2>/dev/null | tr -d '\\n')\""]
    if paths:
        lines.append(f"stat -L -c 'P %F|%a|%n' -- {quoted} 2>/dev/null || true")
    if files:
        lines.append(f"sha256sum -- {' '.join(shlex.quote(p) for p in dict.fromkeys(files))} 2>/dev/null | sed 's/^/H /' || true")
    for i, action in enumerate(actions):
        r = action.resource
        if isinstance(r, Ensure):
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
    ansible: dict[str, str] = field(default_factory=dict)  # role -> why it runs (only for hosts that run)

    @property
    def converged(self) -> bool:
        return not self.reasons


def _parse(output: str) -> tuple[dict | None, bool, dict[str, tuple[str, str]], dict[str, str], dict[int, str], dict[int, str]]:
    """Record (None: unreadable), record present, path -> (kind, mode), path -> sha256, Ensure verdicts, service statuses."""
    found, present, paths, hashes, ensures, services = None, False, {}, {}, {}, {}
    for line in output.splitlines():
        tag, _, rest = line.partition(" ")
        if tag == "R":
            present = bool(rest.strip())
            try:
                found = json.loads(rest) if present else None
            except ValueError:
                found = None
        elif tag == "P":
            kind, mode, path = (rest.split("|", 2) + ["", ""])[:3]
            paths[path] = ("F" if kind.startswith("regular") else "D" if kind == "directory" else "O", mode)
        elif tag == "H":
            digest, _, path = rest.partition("  ")
            hashes[path] = digest
        elif tag in ("E", "S"):
            index, _, value = rest.partition(" ")
            (ensures if tag == "E" else services)[int(index)] = value
    return found, present, paths, hashes, ensures, services


def _drift(i: int, action: Action, paths, hashes, ensures, services) -> str | None:
    """Why the full run would change *action* (None: it would not)."""
    r = action.resource
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
        return None if ensures.get(i) == "0" else f"{r.name}: its check fails"
    if isinstance(r, Service):
        if i not in services:
            return f"{r.spec.name}: no status"
        step = next_step(ServiceState.parse(services[i]), r.spec.digest(), r.running)
        return None if step is Step.NOTHING else f"{r.spec.name}: would {step.value}"
    if isinstance(r, AnsibleTasks):
        return None  # judged by the record's digest of its inputs
    return f"{r.describe()}: cannot be probed"


def judge(host: str, actions: list[Action], output: str | None) -> Verdict:
    """The verdict on *host* from its probe's *output* (None: it did not answer)."""
    if output is None:
        return Verdict(host, ["no answer to the probe"])
    found, present, paths, hashes, ensures, services = _parse(output)
    verdict = Verdict(host, had_record=present)
    wanted = record(actions)
    if found is None:
        verdict.reasons.append("no record of an earlier up" if not present else "its record is unreadable")
    elif found.get("digest") != wanted["digest"]:
        verdict.reasons.append("its inputs changed")
    for i, action in enumerate(actions):
        why = _drift(i, action, paths, hashes, ensures, services)
        if why:
            verdict.reasons.append(why)
    if verdict.reasons:
        before = (found or {}).get("ansible", {}) if isinstance(found, dict) else {}
        for role, digest in wanted["ansible"].items():
            if before.get(role) != digest:
                verdict.ansible[role] = "its inputs changed" if role in before else "no record of an earlier run"
            else:
                verdict.ansible[role] = f"drift found ({verdict.reasons[0]})"
    return verdict
