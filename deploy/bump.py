"""``scripts/bump [PACKAGE[==VERSION] ...]``: move the pins, and keep the move only if it works.

Re-resolves every pin (``--upgrade``), or only the named packages
(``--upgrade-package``; ``NAME==VERSION`` also rewrites an exact pin of a
short list), prints the version diff per pin file, rebuilds the images whose
digest changed (:mod:`deploy.images`), runs the tests (``$TOPPIPE_BUMP_TEST``,
default ``scripts/test``), then either leaves the bump in the working tree
with a suggested commit message, or puts every pin file back and names the
failing tests. uv reads its index from ``--index-url`` or its own
environment (``UV_INDEX_URL``, ``UV_FIND_LINKS`` with ``UV_NO_INDEX=1``).

Exit codes: 0 ready to commit, or nothing to bump; 1 the bump failed
(resolution, image build or tests) and was reverted; 2 bad input, nothing
changed; 130 interrupted, reverted.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from deploy import DeployError, UserError, images, pins
from deploy.artifacts import REPO

DEFAULT_TEST = "scripts/test"
DESCRIPTION = (
    "Re-resolve the pins (all, or the named packages), show the version diff, rebuild the images "
    "whose inputs changed, run the tests ($TOPPIPE_BUMP_TEST, default scripts/test), and leave the "
    "bump as one commit-ready change, or revert it and name the failing tests."
)
REQUEST = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:==([A-Za-z0-9.+!_-]+))?$")


class BumpFailed(DeployError):
    """The bump did not work; the pin files are back as they were."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        raise UserError(f"{message} (see scripts/bump --help)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = _Parser(prog="scripts/bump", description=DESCRIPTION, epilog=__doc__.split("\n\n")[-1])
    parser.add_argument("packages", nargs="*", metavar="PACKAGE[==VERSION]", help="only these (default: every pin)")
    parser.add_argument("--index-url", help="the package index uv resolves against (default: uv's)")
    parser.add_argument("--no-build", action="store_true", help="name the images to rebuild, build none")
    parser.add_argument("--no-test", action="store_true", help="do not run the tests")
    return parser.parse_args(argv)


def compile_argv(requests: list[str], index_url: str | None) -> list[str]:
    """The compile-requirements command line for *requests* (none: upgrade everything)."""
    argv = ["scripts/compile-requirements"]
    argv += [a for r in requests for a in ("--upgrade-package", r)] if requests else ["--upgrade"]
    return argv + (["--index-url", index_url] if index_url else [])


def test_argv(environ: dict[str, str]) -> list[str]:
    """The test command: ``$TOPPIPE_BUMP_TEST`` split like a shell would, or ``scripts/test``."""
    return shlex.split(environ.get("TOPPIPE_BUMP_TEST") or DEFAULT_TEST)


def check_requests(requests: list[str], pinned: set[str], exact: dict[str, str]) -> list[str]:
    """Notes for *requests*; :class:`UserError` for a malformed one or a package that is not pinned.

    *pinned*: every package of the pin files; *exact*: packages a short list
    pins exactly, with their short list (such a package moves only with ``==VERSION``).
    """
    notes = []
    for request in requests:
        match = REQUEST.match(request)
        if not match:
            raise UserError(f"{request!r}: give a package name, or NAME==VERSION")
        name = pins.normalize(match.group(1))
        if name not in pinned:
            close = difflib.get_close_matches(name, sorted(pinned), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UserError(f"no pinned package named {match.group(1)!r}{hint}")
        if name in exact and not match.group(2):
            notes.append(f"{name} stays where {exact[name]} pins it; scripts/bump {name}==VERSION moves it")
    return notes


class Workspace:
    """The pin files and short lists of a repository: their state before the bump, and how to put it back."""

    def __init__(self, root: Path):
        self.root = root
        self.files = [*pins.pin_files(root), *pins.short_lists(root)]
        self.saved = {path: path.read_bytes() for path in self.files}

    def check_clean(self) -> None:
        """A bump is one change: refuse to start over uncommitted edits of the pin files."""
        argv = ["git", "status", "--porcelain", "--untracked-files=all", "--", "requirements.txt", "requirements"]
        done = subprocess.run(argv, cwd=self.root, capture_output=True, text=True)
        if done.returncode != 0:
            raise UserError(f"{self.root} is not a git checkout ({done.stderr.strip()}); a bump must be one commit-ready change")
        dirty = [line[3:] for line in done.stdout.splitlines()]
        if dirty:
            raise UserError(f"uncommitted changes in {', '.join(dirty)}; commit or discard them first, a bump must be one change")

    def versions(self) -> dict[str, dict[str, str]]:
        """``file -> name -> version`` of every pin file, as it is now."""
        return {str(p.relative_to(self.root)): pins.read(p) for p in pins.pin_files(self.root)}

    def hold(self, name: str, version: str) -> None:
        """Set the exact pin of *name* to *version* in every short list that pins it exactly."""
        for path in pins.short_lists(self.root):
            text = path.read_text()
            if name in pins.held(text):
                path.write_text(pins.hold(text, name, version))

    def exact_pins(self) -> dict[str, str]:
        """``name -> short list`` of the packages a short list pins exactly."""
        return {name: str(path.relative_to(self.root)) for path in pins.short_lists(self.root) for name in pins.held(path.read_text())}

    def changed(self) -> list[str]:
        return [str(p.relative_to(self.root)) for p in self.files if p.read_bytes() != self.saved[p]]

    def restore(self) -> None:
        for path, data in self.saved.items():
            path.write_bytes(data)
        for path in pins.pin_files(self.root):
            if path not in self.saved:
                path.unlink()


def _say(text: str = "") -> None:
    print(text, flush=True)


def _show(changes: list[pins.Change]) -> None:
    """The version diff, one block per pin file."""
    for file in dict.fromkeys(change.file for change in changes):
        _say(file)
        for change in changes:
            if change.file == file:
                _say(f"  {change}")


def _resolve(work: Workspace, args, exact: dict[str, str]) -> None:
    """Rewrite the exact pins asked for (*exact*: those the short lists hold), then run
    compile-requirements; BumpFailed with uv's last lines."""
    for request in args.packages:
        name, _, version = request.partition("==")
        if version and pins.normalize(name) in exact:
            work.hold(pins.normalize(name), version)
    argv = compile_argv(args.packages, args.index_url)
    _say(f"bump: {' '.join(argv)}")
    done = subprocess.run(argv, cwd=work.root, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n    ".join((done.stderr or done.stdout).strip().splitlines()[-8:])
        raise BumpFailed(f"could not resolve the pins (exit {done.returncode}):\n    {tail}")


def _build(names: list[str]) -> None:
    for name in names:
        _say(f"bump: building image {name}")
        try:
            images.build(name, note=lambda text: _say(f"  {text}"))
        except DeployError as exc:
            raise BumpFailed(f"image {name} did not build (scripts/bump --no-build skips the builds): {exc}") from exc


def _test(root: Path) -> str:
    """Run the tests, their output shown as it comes; BumpFailed naming the failing tests."""
    argv = test_argv(dict(os.environ))
    _say(f"bump: testing with {shlex.join(argv)} (TOPPIPE_BUMP_TEST sets the command)")
    failed = []
    try:
        proc = subprocess.Popen(argv, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    except OSError as exc:
        raise BumpFailed(f"could not run the tests ({shlex.join(argv)}): {exc.strerror}") from exc
    with proc:
        for line in proc.stdout:
            sys.stdout.write(line)
            found = pins.failed_test(line)
            if found and found not in failed:
                failed.append(found)
    if proc.returncode != 0:
        named = f"failing: {', '.join(failed)}" if failed else "no failing test named; see the output above"
        raise BumpFailed(f"the tests failed (exit {proc.returncode}), {named}; scripts/setup --test puts the previous pins back into .venv")
    return f"Tests: {shlex.join(argv)} passed"


def bump(args, root: Path = REPO) -> int:
    """Bump as *args* asks in the repository at *root*; see the module doc."""
    work = Workspace(root)
    before = work.versions()
    pinned = {name for versions in before.values() for name in versions}
    exact = work.exact_pins()
    request_notes = check_requests(args.packages, pinned, exact)
    work.check_clean()
    for note in request_notes:
        _say(f"bump: note: {note}")
    digests = {name: images.digest(name) for name in images.IMAGES}
    try:
        _resolve(work, args, exact)
        changes = pins.diff(before, work.versions())
        if not changes:
            work.restore()
            _say("bump: nothing to bump, every pin asked for is already the newest")
            return 0
        _show(changes)
        rebuild = pins.changed_images(digests, {name: images.digest(name) for name in images.IMAGES})
        listed = ", ".join(rebuild) or "none"
        _say(f"images to rebuild: {listed}")
        if args.no_build:
            notes = [f"Images to rebuild: {listed} (not built: --no-build)"]
        else:
            _build(rebuild)
            notes = [f"Images rebuilt: {listed}"]
        notes.append("Tests: not run (--no-test)" if args.no_test else _test(root))
    except BaseException:
        work.restore()
        _say("bump: reverted, the pin files are as they were")
        raise
    _say()
    _say(f"bump: ready to commit: git add {' '.join(work.changed())}, then commit with this message:")
    _say()
    _say(pins.commit_message(changes, notes))
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return bump(parse_args(argv))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DeployError as exc:
        print(f"bump: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bump: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
