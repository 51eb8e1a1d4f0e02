"""A shared folder (``paths.shared``) must be one filesystem for the workers.

Each worker host writes a file named for itself and this run; every other
worker host reads it back; then each writer removes its file.
"""

from __future__ import annotations

import posixpath
import re
import shlex

from deploy.checks.hosts import Section, last_line
from deploy.checks.results import CheckResult

CHECK = "shared folder"


def marker_path(shared: str, site: str, host: str, token: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", host)
    return posixpath.join(shared, f".toppipe-check.{site}.{safe}.{token}")


def write_script(path: str, token: str) -> str:
    return f"printf %s {shlex.quote(token)} > {shlex.quote(path)}"


def read_script(path: str) -> str:
    return f"cat {shlex.quote(path)}"


def remove_script(path: str) -> str:
    return f"rm -f {shlex.quote(path)}"


def judge_shared(host: str, shared: str, wrote: Section | None, reads: dict[str, Section], token: str) -> CheckResult:
    """*wrote*: this host's write (None if it writes nothing); *reads*: other writers' files as this host read them."""
    problems = []
    if wrote is not None and not wrote.ok:
        problems.append(f"cannot write to {shared}: {last_line(wrote.output)}")
    missing = [writer for writer, read in reads.items() if not read.ok or read.output.strip() != token]
    if missing:
        problems.append(f"does not see the file{'s' * (len(missing) > 1)} of {', '.join(missing)} in {shared}")
    if problems:
        return CheckResult(host, "site", CHECK, False, "; ".join(problems))
    seen = f"sees the files of {', '.join(reads)}" if reads else "no other host to compare with"
    return CheckResult(host, "site", CHECK, True, ("wrote a file, " if wrote else "") + seen + f" in {shared}")
