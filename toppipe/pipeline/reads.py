"""The files a task reads, by content, so that they count towards its cached result.

While a task runs on a worker, :func:`tracking` records every file its
thread opens for reading and every folder it lists, through Python's audit
hooks (``open``, ``os.listdir``, ``os.scandir``): ``open``, pandas, numpy,
``glob`` and ``json`` are seen without the task saying anything. Files that
native libraries open themselves (HDF5, pyarrow datasets) are not seen:
pass their paths through :func:`~toppipe.pipeline.project_path` or
:func:`track`, which record them too.

Not tracked: the Python environment and system folders, the result cache,
files the task wrote, and anything that is not a file (a database, a URL).

A file's digest is the sha256 of its content, remembered per process by its
identity (device, inode, size, modification and change times), so an
unchanged file is read once per worker. A project file whose synced copy
differs from the client's snapshot is waited for (lsyncd may still be on it):
the task reads what the user saved, or fails naming the file.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

from toppipe.pipeline.graph import PipelineError

#: How long a task waits for lsyncd to bring a project file to the saved version.
SYNC_WAIT = 30.0
_Identity = tuple[int, int, int, int, int]
_digests: dict[str, tuple[_Identity, str]] = {}  # path -> (identity when hashed, digest)
_local = threading.local()


class OutOfSync(PipelineError):
    """A synced project file did not reach the version the run was started with."""


@dataclass(frozen=True)
class Snapshot:
    """The client's project files at the start of a run: relative path -> digest.

    It travels once per run (one key of the run's graph), not with every task.
    """

    files: dict[str, str] = field(default_factory=dict)

    def listing(self, folder: str) -> set[str] | None:
        """The names directly in *folder* (relative, ``""`` for the root), or None if unknown."""
        prefix = f"{folder}/" if folder else ""
        names = {rel[len(prefix):].split("/", 1)[0] for rel in self.files if rel.startswith(prefix)}
        return names or None


def identity(path: str) -> _Identity | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def file_digest(path: str) -> tuple[_Identity, str] | None:
    """(identity, sha256 prefix) of a regular file, hashed only when its identity changed."""
    found = identity(path)
    if found is None:
        return None
    known = _digests.get(path)
    if known is not None and known[0] == found:
        return known
    digest = hashlib.sha256()
    with open(path, "rb", opener=_untracked_open) as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    after = identity(path)
    if after != found:  # written while we read it: try again later
        return None
    _digests[path] = (found, digest.hexdigest()[:16])
    return _digests[path]


def listing_digest(names) -> str:
    return "dir:" + hashlib.sha256("\0".join(sorted(names)).encode()).hexdigest()[:16]


@contextmanager
def _untracked():
    """Our own reads of files and folders are not the task's."""
    before, _local.busy = getattr(_local, "busy", False), True
    try:
        yield
    finally:
        _local.busy = before


def _untracked_open(path, flags):
    with _untracked():
        return os.open(path, flags)


class _Reads:
    """What one task read: label -> digest; labels are ``project:REL`` or absolute paths."""

    def __init__(self, project: str | None, snapshot: Snapshot | None, untracked: tuple[str, ...]):
        self.project = project  # (real, ending in a separator)
        self.snapshot = snapshot
        self.untracked = untracked
        self.files: dict[str, tuple[str, _Identity | None, str]] = {}  # label -> (path, identity, digest)
        self.written: set[str] = set()
        self.changed: list[str] = []

    def label(self, real: str) -> str:
        if self.project and (real + os.sep).startswith(self.project):
            return "project:" + real[len(self.project):]
        return real

    def wanted(self, real: str) -> bool:
        return not real.startswith(self.untracked) and "/__pycache__/" not in real

    def opened(self, path, mode: str) -> None:
        real = os.path.realpath(os.fsdecode(path))
        if not self.wanted(real):
            return
        if any(c in mode for c in "wax+"):
            self.written.add(real)
            return
        if real in self.written:
            return
        label = self.label(real)
        if label not in self.files:
            found = self._settled_file(real, label)
            if found is not None:
                self.files[label] = (real, found[0], found[1])

    def listed(self, path) -> None:
        real = os.path.realpath(os.fsdecode(path))
        if not self.wanted(real) or not os.path.isdir(real):
            return
        label = self.label(real)
        if label not in self.files:
            self.files[label] = (real, None, listing_digest(folder_names(real, label, self.snapshot, wait=True)))

    def _settled_file(self, real: str, label: str):
        """The digest of *real*; for a project file, once it is the client's saved version."""
        want = self.snapshot.files.get(label[len("project:"):]) if self.snapshot and label.startswith("project:") else None
        if want is None:
            return file_digest(real)
        return wait_for_digest(real, want)

    def manifest(self) -> dict[str, str] | None:
        """label -> digest of everything read, or None if a file changed while the task ran."""
        out = {}
        for label, (real, ident, digest) in self.files.items():
            if ident is not None and identity(real) != ident:
                self.changed.append(real)
            out[label] = digest
        return None if self.changed else out


def _visible(folder: str) -> set[str]:
    with _untracked():
        try:
            return set(os.listdir(folder))
        except OSError:
            return set()


def _shown(names) -> set[str]:
    """Names that count in a project folder's listing: not hidden ones (rsync's temporary files
    are hidden), not ``__pycache__``."""
    return {n for n in names if not n.startswith(".") and n != "__pycache__"}


def folder_names(real: str, label: str, snapshot: Snapshot | None, wait: bool) -> set[str]:
    """The names in a folder a task listed. A synced project folder counts as the client saved
    it (and, with *wait*, is waited for until the synced copy shows the same names)."""
    if not label.startswith("project:"):
        return _visible(real)
    expected = snapshot.listing(label[len("project:"):]) if snapshot is not None else None
    if expected is None:
        return _shown(_visible(real))
    if wait:
        _wait(lambda: _shown(_visible(real)), lambda found: found == _shown(expected), real)
    return _shown(expected)


def wait_for_digest(path: str, want: str):
    """(identity, digest) of *path* once its content has digest *want*; OutOfSync if it never does."""
    return _wait(lambda: file_digest(path), lambda found: found is not None and found[1] == want, path)


def _wait(probe, good, path: str):
    deadline = time.monotonic() + SYNC_WAIT
    delay = 0.02
    while True:
        found = probe()
        if good(found):
            return found
        if time.monotonic() > deadline:
            host = os.uname().nodename
            raise OutOfSync(
                f"{path} on {host} is not the version saved when the run started (still different after "
                f"{SYNC_WAIT:.0f} s); check that the project sync runs (python -m deploy status), then run again"
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def _hook(event: str, args) -> None:
    reads = getattr(_local, "reads", None)
    if reads is None or getattr(_local, "busy", False):
        return
    if event == "open":
        path, mode = args[0], args[1]
        if isinstance(path, int) or path is None:
            return
        if mode is None:  # os.open: flags
            flags = args[2]
            mode = "r" if flags & os.O_ACCMODE == os.O_RDONLY and not flags & os.O_CREAT else "w"
        with _untracked():
            reads.opened(path, str(mode))
    elif event in ("os.listdir", "os.scandir"):
        path = args[0]
        if isinstance(path, int):
            return
        with _untracked():
            reads.listed("." if path is None else path)


_hooked = False


def _untracked_roots(extra: tuple[str, ...]) -> tuple[str, ...]:
    environment = {sys.prefix, sys.base_prefix, sys.exec_prefix, *(p for p in sys.path if p and os.path.isdir(p))}
    system = ("/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc", "/proc", "/sys", "/dev", "/run", "/tmp", "/var/tmp")
    roots = {os.path.realpath(p) + os.sep for p in (*environment, *system, *extra) if p}
    return tuple(sorted(roots))


#: (sys.path, untracked, project) -> (the project's real path, the roots not tracked): resolving a
#: hundred paths costs more than a trivial task, and they change only with sys.path. (A folder of
#: sys.path made later stays tracked: more reads in a key, never fewer.)
_roots_memo: dict[tuple, tuple[str | None, tuple[str, ...]]] = {}


def _roots_for(project: str | None, untracked: tuple[str, ...]) -> tuple[str | None, tuple[str, ...]]:
    memo_key = (tuple(sys.path), untracked, project)
    found = _roots_memo.get(memo_key)
    if found is None:
        inside = os.path.realpath(project) + os.sep if project else None
        roots = tuple(r for r in _untracked_roots(untracked) if inside is None or not inside.startswith(r))  # the project is tracked
        if len(_roots_memo) >= 64:
            _roots_memo.clear()
        found = _roots_memo[memo_key] = (inside, roots)
    return found


@contextmanager
def tracking(project: str | None, snapshot: Snapshot | None = None, untracked: tuple[str, ...] = ()):
    """Record what the current thread reads inside the block; yields the :class:`_Reads`."""
    global _hooked
    if not _hooked:
        sys.addaudithook(_hook)
        _hooked = True
    inside, roots = _roots_for(project, untracked)
    reads = _Reads(inside, snapshot, roots)
    _local.reads, _local.busy = reads, False
    try:
        yield reads
    finally:
        _local.reads = None


def track(path: str | os.PathLike) -> str:
    """Count *path* (a file, or a folder and everything in it) as read by the running task; returns it.

    For readers Python does not see opening files (HDF5, pyarrow datasets).
    Outside a task it only returns the path.
    """
    text = os.fspath(path)
    reads = getattr(_local, "reads", None)
    if reads is None:
        return text
    with _untracked():
        real = os.path.realpath(text)
        if os.path.isdir(real):
            for folder, dirs, names in os.walk(real):
                dirs[:] = sorted(d for d in dirs if d != "__pycache__")
                reads.listed(folder)
                for name in sorted(names):
                    reads.opened(os.path.join(folder, name), "r")
        elif os.path.exists(real):
            reads.opened(real, "r")
    return text


def still_valid(manifest: dict[str, str], project: str | None, snapshot: Snapshot | None) -> bool:
    """Whether everything in *manifest* still has its digest (project files: as the client saved them)."""
    root = os.path.realpath(project) if project else None
    for label, digest in manifest.items():
        if label.startswith("project:"):
            if root is None:
                return False
            rel = label[len("project:"):]
            path = os.path.join(root, rel) if rel else root
            if snapshot is not None and not digest.startswith("dir:"):
                if snapshot.files.get(rel) != digest:
                    return False
                continue
        else:
            path = label
        if digest.startswith("dir:"):
            if not os.path.isdir(path) or listing_digest(folder_names(path, label, snapshot, wait=False)) != digest:
                return False
            continue
        found = file_digest(path)
        if found is None or found[1] != digest:
            return False
    return True
