"""Several services' steps on one host at once, as one bash script, and its output read back.

Each member runs in a background subshell of its own as soon as the members it
comes *after* have succeeded (a member whose prerequisite failed is not run at
all); the script waits for every member, then prints each one's exit code,
stdout and stderr as tagged lines, and exits 1 when any member did not succeed,
so that the engine stops the host's later actions as it does after one failed
step. Nothing here runs anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from deploy.runtime.shell import q

#: Starts every line of the script's report.
TAG = "@@toppipe-member"
#: The exit code the report gives a member that was not run because a prerequisite did not succeed.
NOT_RUN = "not-run"


@dataclass(frozen=True)
class Member:
    """One step of one service: bash *command*, run once the members named in *after* succeeded."""

    key: str
    command: str
    after: tuple[str, ...] = ()


@dataclass(frozen=True)
class MemberOutcome:
    """What one member did: its exit code (None: not run), stdout and stderr."""

    rc: int | None
    stdout: str
    stderr: str


def statuses(scripts: dict[str, str]) -> str:
    """Bash running each service's status script (by name) in turn, in one round trip; see :func:`parse_statuses`."""
    return "\n".join(f'echo "{TAG} {name} status"\n( {script}\n) 2>/dev/null' for name, script in scripts.items()) + "\n"


def parse_statuses(output: str) -> dict[str, str]:
    """The output of each status script that :func:`statuses` ran, by service name."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        if line.startswith(TAG + " ") and line.endswith(" status"):
            current = found.setdefault(line[len(TAG) + 1 : -len(" status")], [])
        elif current is not None:
            current.append(line)
    return {name: "\n".join(lines) for name, lines in found.items()}


def script(members: list[Member]) -> str:
    """Bash that runs *members* side by side, each after its prerequisites (keys of earlier members)."""
    index: dict[str, int] = {}
    for i, member in enumerate(members):
        if not re.fullmatch(r"[A-Za-z0-9._-]+", member.key) or member.key in index:
            raise ValueError(f"member key {member.key!r} is not a plain name, or is doubled")
        index[member.key] = i
    parts = ['set -u\nw=$(mktemp -d)\ntrap \'rm -rf "$w"\' EXIT']
    for i, member in enumerate(members):
        waits = "".join(
            f'  until [ -f "$w/{index[dep]}.rc" ]; do sleep 0.05; done\n'
            f'  [ "$(cat "$w/{index[dep]}.rc")" = 0 ] || {{ echo {NOT_RUN} > "$w/{i}.rc"; exit 0; }}\n'
            for dep in member.after
            if index.get(dep, i) < i  # only earlier members: no cycle can wait forever
        )
        parts.append(
            f"(\n{waits}"
            f'  bash -c {q(member.command)} </dev/null >"$w/{i}.out" 2>"$w/{i}.err"\n'
            f'  echo $? > "$w/{i}.rc.part" && mv "$w/{i}.rc.part" "$w/{i}.rc"\n'
            ") &"
        )
    parts.append("wait\nfailed=0")
    for i, member in enumerate(members):
        tag = f"{TAG} {member.key}"
        parts.append(
            f'rc=$(cat "$w/{i}.rc" 2>/dev/null || echo 1); [ "$rc" = 0 ] || failed=1\n'
            f'echo "{tag} rc $rc"\n'
            f'[ -f "$w/{i}.out" ] && sed "s/^/{tag} out /" "$w/{i}.out"\n'
            f'[ -f "$w/{i}.err" ] && sed "s/^/{tag} err /" "$w/{i}.err"'
        )
    parts.append("exit $failed")
    return "\n".join(parts) + "\n"


def parse(output: str) -> dict[str, MemberOutcome]:
    """Each reported member's outcome from the script's stdout, by key (members it did not run are left out)."""
    rcs: dict[str, int | None] = {}
    lines: dict[tuple[str, str], list[str]] = {}
    for line in output.splitlines():
        if not line.startswith(TAG + " "):
            continue
        key, kind, rest = (line[len(TAG) + 1 :].split(" ", 2) + ["", ""])[:3]
        if kind == "rc":
            rcs[key] = None if rest == NOT_RUN else int(rest) if rest.lstrip("-").isdigit() else 1
        elif kind in ("out", "err"):
            lines.setdefault((key, kind), []).append(rest)
    return {key: MemberOutcome(rc, "\n".join(lines.get((key, "out"), [])), "\n".join(lines.get((key, "err"), []))) for key, rc in rcs.items()}
