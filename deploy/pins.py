"""Pin files: read them, compare two sets of them, and word a bump.

``requirements/in/<part>.in`` are the short lists; ``scripts/compile-requirements``
compiles ``client.in`` into ``requirements.txt`` and every other part into
``requirements/<part>.txt``: ``name==version`` lines, each with its
``--hash=sha256:`` options. Pure functions, used by ``scripts/bump``
(:mod:`deploy.bump`) and the tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from deploy import UserError

#: ``name[extras]==version`` at the start of a requirement line.
REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\#]+)")
#: A requirement of a short list: ``name[extras]``, then maybe a version specifier.
LISTED = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(?:==\s*([^\s;,\\#]+)\s*$)?")
#: A line of pytest's short summary: ``FAILED tests/x.py::test_y - ...`` or ``ERROR tests/x.py``.
FAILED_LINE = re.compile(r"^(?:FAILED|ERROR) (\S+)")


class PinError(UserError):
    """A pin file or a short list that is not what compile-requirements writes."""


def normalize(name: str) -> str:
    """The canonical form of a package name (PEP 503): ``Foo_Bar`` -> ``foo-bar``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse(text: str, source: str = "pins") -> dict[str, str]:
    """``name -> version`` of a pin file; :class:`PinError` on any requirement not pinned exactly with a hash."""
    pins: dict[str, str] = {}
    for number, line in _lines(text.replace("\\\n", " ")):
        match = REQUIREMENT.match(line)
        if not match:
            raise PinError(f"{source}:{number}: not an exact pin: {line[:60]}")
        name = normalize(match.group(1))
        if "--hash=sha256:" not in line:
            raise PinError(f"{source}:{number}: {name} has no hash")
        if name in pins:
            raise PinError(f"{source}: {name} pinned twice")
        pins[name] = match.group(3)
    return pins


def read(path: Path) -> dict[str, str]:
    """:func:`parse` of the pin file at *path*."""
    return parse(Path(path).read_text(), Path(path).name)


def listed(text: str) -> dict[str, str | None]:
    """``name -> version`` of every requirement of a short list: the version if it is pinned exactly, else None."""
    found: dict[str, str | None] = {}
    for _, line in _lines(text):
        match = LISTED.match(line)
        if match and not line.startswith("-"):
            found[normalize(match.group(1))] = match.group(3)
    return found


def held(text: str) -> dict[str, str]:
    """``name -> version`` of the exact pins (``name==version``) of a short list."""
    return {name: version for name, version in listed(text).items() if version}


def hold(text: str, name: str, version: str) -> str:
    """A short list with the exact pin of *name* set to *version* (extras and comments kept)."""
    lines = []
    for line in text.split("\n"):
        code, mark, comment = line.partition("#")
        match = LISTED.match(code.strip())
        if match and match.group(3) and normalize(match.group(1)) == name:
            head, _, pinned = code.rpartition("==")
            line = f"{head}=={pinned.replace(pinned.strip(), version, 1)}{mark}{comment}"
        lines.append(line)
    return "\n".join(lines)


def _lines(text: str):
    """``(line number, text)`` of every line that is not blank once its comment is cut."""
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if line:
            yield number, line


def pin_files(root: Path) -> list[Path]:
    """Every compiled pin file of the repository at *root*: requirements.txt, then requirements/*.txt."""
    return [root / "requirements.txt", *sorted((root / "requirements").glob("*.txt"))]


def short_lists(root: Path) -> list[Path]:
    """Every short list: requirements/in/*.in."""
    return sorted((root / "requirements" / "in").glob("*.in"))


def compiled_from(short_list: Path) -> Path:
    """The pin file compile-requirements writes from *short_list* (client.in -> requirements.txt)."""
    root = short_list.parents[2]
    part = short_list.stem
    return root / "requirements.txt" if part == "client" else root / "requirements" / f"{part}.txt"


@dataclass(frozen=True)
class Change:
    """One package's version in one pin file, before and after (``None``: absent)."""

    file: str
    name: str
    old: str | None
    new: str | None

    def __str__(self) -> str:
        if self.old is None:
            return f"{self.name} (new) {self.new}"
        if self.new is None:
            return f"{self.name} {self.old} (removed)"
        return f"{self.name} {self.old} -> {self.new}"


def diff(before: dict[str, dict[str, str]], after: dict[str, dict[str, str]]) -> list[Change]:
    """Every package whose version differs, per pin file (``file -> name -> version``), sorted by file and name."""
    changes = []
    for file in sorted(set(before) | set(after)):
        old, new = before.get(file, {}), after.get(file, {})
        for name in sorted(set(old) | set(new)):
            if old.get(name) != new.get(name):
                changes.append(Change(file, name, old.get(name), new.get(name)))
    return changes


def changed_images(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """The images (in the order of *after*) whose digest is not what it was."""
    return [name for name, digest in after.items() if before.get(name) != digest]


def failed_test(line: str) -> str | None:
    """The test id a pytest summary line names as failed (``FAILED``/``ERROR``), else None."""
    match = FAILED_LINE.match(line)
    return match.group(1) if match else None


def commit_message(changes: list[Change], notes: list[str]) -> str:
    """A commit message for a bump: the packages in the subject, then every file's diff and *notes*."""
    versions: dict[str, str] = {}
    for change in changes:
        versions.setdefault(change.name, str(change))
    subject = f"Bump {', '.join(versions.values())}" if len(versions) <= 3 else f"Bump {len(versions)} pinned packages"
    body = [f"{change.file}: {change}" for change in changes]
    return "\n".join([subject, "", *body, *notes, "", "Made by scripts/bump."])
