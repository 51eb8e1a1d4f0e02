"""What the client builds once and ships to hosts: wheels and toppipe's code.

Hosts are often offline, so their Python environment comes from a
wheelhouse made here from the pinned files, packed as one tar named by the
hash of its inputs: unchanged pins, same tar, nothing re-sent.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from deploy import DeployError

REPO = Path(__file__).resolve().parent.parent
VERSIONS_FILE = REPO / "config" / "versions.yml"
HOST_PINS = ("requirements/scheduler.txt", "requirements/worker.txt")
SHIPPED_PACKAGES = ("toppipe",)


@dataclass(frozen=True)
class Artifact:
    path: Path
    digest: str


def versions(versions_file: Path | None = None) -> dict:
    """``config/versions.yml``: the versions that are not Python packages (a copy: change it freely)."""
    path = Path(versions_file or VERSIONS_FILE)
    stat = path.stat()
    return dict(_parsed(path, stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=8)
def _parsed(path: Path, mtime_ns: int, size: int) -> dict:
    """The file parsed once per content seen (a deploy asks for a version about a hundred times)."""
    return yaml.safe_load(path.read_text()) or {}


def version(key: str, versions_file: Path = VERSIONS_FILE) -> str:
    """One version of ``config/versions.yml``; DeployError naming the file and key when it is missing."""
    found = versions(versions_file).get(key)
    if found is None or found == "":
        raise DeployError(f"{versions_file}: no '{key}:' version; add it (the images, the lab and the scripts read it there)")
    return str(found)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    folder = Path(base) / "toppipe"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    """A reproducible tar: sorted names, zero mtimes, fixed owner."""
    tmp = path.with_suffix(".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(members):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, path)


def wheelhouse(note=lambda text: None) -> Artifact:
    """The host wheelhouse for the pinned scheduler and worker parts."""
    python = version("python")
    inputs = b"".join((REPO / p).read_bytes() for p in HOST_PINS) + platform.machine().encode() + python.encode()
    digest = hashlib.sha256(inputs).hexdigest()[:16]
    path = cache_dir() / f"wheelhouse-{digest}.tar"
    if path.is_file():
        return Artifact(path, digest)
    note(f"building the host wheelhouse from {', '.join(HOST_PINS)} (once per pin change)")
    machine = platform.machine()
    with tempfile.TemporaryDirectory() as tmp:
        argv = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
                "--require-hashes", "--only-binary=:all:", "--python-version", python, "--implementation", "cp",
                "--abi", "cp" + python.replace(".", ""), "-d", tmp]  # fmt: skip
        for tag in ("manylinux_2_28", "manylinux_2_17", "manylinux2014", "linux"):
            argv += ["--platform", f"{tag}_{machine}"]
        for pins in HOST_PINS:
            argv += ["-r", str(REPO / pins)]
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            tail = " / ".join(done.stderr.strip().splitlines()[-3:])
            raise DeployError(f"could not download the host wheels (pip exit {done.returncode}): {tail}")
        members = [(f"wheels/{f.name}", f.read_bytes()) for f in Path(tmp).iterdir()]
    members += [(f"pins/{Path(p).name}", (REPO / p).read_bytes()) for p in HOST_PINS]
    _tar(path, members)
    return Artifact(path, digest)


def source_bundle() -> Artifact:
    """toppipe's own package, as the hosts import it."""
    members = []
    for package in SHIPPED_PACKAGES:
        for file in sorted((REPO / package).rglob("*")):
            if file.is_file() and file.suffix in (".py", ".yaml") and "__pycache__" not in file.parts:
                members.append((str(file.relative_to(REPO)), file.read_bytes()))
    digest = hashlib.sha256(b"".join(n.encode() + b"\0" + d for n, d in members)).hexdigest()[:16]
    path = cache_dir() / f"source-{digest}.tar"
    if path.is_file():
        os.utime(path)  # in use: not pruned by another checkout's deploy
    else:
        _tar(path, members)
        _prune_source_bundles(keep=path)
    return Artifact(path, digest)


#: A bundle unused this long is removed when another is made (code changes often). Not at once:
#: a deploy from another checkout, or of another version, may be sending its own bundle right now.
SOURCE_BUNDLE_KEEP_SECONDS = 3600


def _prune_source_bundles(keep: Path) -> None:
    for old in cache_dir().glob("source-*.tar"):
        try:
            if old != keep and time.time() - old.stat().st_mtime > SOURCE_BUNDLE_KEEP_SECONDS:
                old.unlink()
        except FileNotFoundError:  # another deploy pruned it first
            pass
