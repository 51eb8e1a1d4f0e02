"""Apptainer images of a site, built here from pinned inputs and cached by their hash.

``IMAGES`` names each image's definition file, the pin files it installs,
the image it starts from and the versions it takes from ``config/versions.yml``.
Only ``base`` is bootstrapped from Debian (debootstrap); every other image
starts from another (``Bootstrap: localimage``)::

    base ── compute ── scheduler ── client
      ├──── postgres
      └──── redis

An image is ``<cache>/images/<name>-<digest>.sif`` (``<cache>`` is
``$XDG_CACHE_HOME/toppipe``, by default ``~/.cache/toppipe``), where the
digest (:func:`digest`) covers the definition, its pin files, its versions,
the Debian suite, the machine architecture and its base image's digest:
unchanged inputs, same file, never rebuilt; one changed pin, new images for
exactly the images that contain it (worker.txt: compute, scheduler, client).

How an image is built (:func:`build`)
-------------------------------------
By ``scripts/toppipe.d/build-image`` (bash: the entry script runs it too, for the
client image on a desktop with no Python; from the client image it runs on the
host, through the relay), in three steps, all from the same definition file:

1. the root filesystem: an image with a base gets the base's, unpacked by
   ``unsquashfs`` (apptainer's own unpacking runs in a container that may not
   chown here, and fails for a user); ``base`` gets the bootstrap only (the
   header of the definition, no sections) as real root: debootstrap needs real
   device nodes (``mknod``), a namespace cannot make them;
2. ``apptainer build --sandbox --update`` of the full definition over that
   tree (``%files``, ``%post``, labels, environment), as root of a user
   namespace: root there has every capability of that namespace, and the
   tree's owners (root, ``shadow``, ``staff``...) are kept;
3. the tree packed into a SIF (no ``%post``: no capability asked).

*Root* (this machine, the lab, CI): the namespace of step 2 maps every id to
itself. ``--fakeroot`` would refuse to run without a ``root:`` line in
``/etc/subuid``, which we do not write into the machine's configuration; and a
plain root build fails in ``%post`` because apptainer asks for every
capability while this machine withholds CAP_SYS_RESOURCE (lab facts).

*A user* (a desktop): every step runs in a namespace that maps root to the
user and other ids to the user's subordinate range (``unshare --map-auto
--map-root-user``), as ``--fakeroot`` maps them; ``base`` is one ``apptainer
build --fakeroot`` (its fakeroot provides debootstrap's device nodes). Both
need a line for the user in ``/etc/subuid`` and ``/etc/subgid`` (``apptainer
config fakeroot --add USER``): without one, or without user namespaces,
build-image says in one line what to ask the admin for.

The building machine passes in what is its own, never written into the
repository: the Debian mirror of its apt sources (``TOPPIPE_DEBIAN_MIRROR``
overrides it) and its CA bundle (outbound TLS may be re-signed by a local CA;
pip uses it through ``PIP_CERT`` during ``%post`` only, then it is removed).

``%post`` never sees this machine's ``/tmp`` or home folder
(``APPTAINER_NO_MOUNT=tmp,home``): apptainer binds both into builds by
default, so a clean-up line like ``rm -rf /tmp/*`` in a definition would
empty the building machine's ``/tmp`` (it did, once, while this was written).
Step 2 also skips ``/sys`` (a user namespace that owns no network namespace
may not mount sysfs; the network is needed for pip).

Every SIF is packed with gzip at level 1 (build-image's ``squashfs``): measured on
the client image (1.2 GB unpacked, one core), mksquashfs's default level 9 took
121 s for 330 MB and level 1 took 15 s for 375 MB. gzip, not zstd (6 s, 344 MB),
because every Apptainer and SingularityCE a site may run reads gzip.

Every output line of apptainer goes to ``<cache>/images/<name>-<digest>.log``;
``note`` gets a summary (the steps, debootstrap's phases, pip's results), and
a failure raises :class:`deploy.DeployError` with the log's last lines.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shlex
import shutil
import subprocess
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from deploy import DeployError, host_shell
from deploy.artifacts import REPO, VERSIONS_FILE, Artifact, cache_dir, version


@dataclass(frozen=True)
class ImageSpec:
    """One image: its definition, the pin files it installs, the image it starts
    from, and the keys of ``config/versions.yml`` passed to it as build args."""

    definition: str
    pins: tuple[str, ...] = ()
    base: str | None = None
    versions: tuple[str, ...] = ()


#: What builds one image, as root or as a user (bash); the entry script runs it too, for the
#: client image on a desktop without Python.
BUILD_IMAGE = REPO / "scripts" / "toppipe.d" / "build-image"


#: The table of images (one line each; bash reads it too, in scripts/toppipe.d/digest.sh).
IMAGES_TABLE = REPO / "containers" / "images.txt"


def read_images(table: Path = IMAGES_TABLE) -> dict[str, ImageSpec]:
    """Every image of *table*, by name: ``name definition base pins versions`` per line,
    ``-`` for none, lists comma-separated, ``#`` starts a comment."""
    found: dict[str, ImageSpec] = {}
    for line in table.read_text().splitlines():
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        name, definition, base, pins, keys = words
        listed = lambda word: tuple(word.split(",")) if word != "-" else ()  # noqa: E731
        found[name] = ImageSpec(definition, listed(pins), None if base == "-" else base, listed(keys))
    return found


#: Every image, by name. Paths are relative to the repository.
IMAGES: dict[str, ImageSpec] = read_images()

CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
APT_SOURCES = Path("/etc/apt")
LOG_TAIL = 15


def debian_suite(versions_file: Path | None = None) -> str:
    """The Debian suite images are built from (``debian:`` in config/versions.yml)."""
    return version("debian", versions_file or VERSIONS_FILE)


def image_inputs_digest(def_file, pinned_files, suite: str | None = None, extra: tuple[str, ...] = ()) -> str:
    """16 hex digits of sha256 over the definition, its pin files, the Debian suite,
    the architecture and *extra* (build args, the base image's digest).

    Paths are not hashed, only contents (a copy of the same inputs elsewhere
    has the same digest); each part is length-prefixed so that no two
    different sets of inputs concatenate to the same bytes.
    """
    parts = [b"toppipe-image-v2", Path(def_file).read_bytes()]
    parts += [Path(p).read_bytes() for p in pinned_files]
    parts += [(suite or debian_suite()).encode(), platform.machine().encode()]
    parts += [e.encode() for e in extra]
    sha = hashlib.sha256()
    for part in parts:
        sha.update(len(part).to_bytes(8, "big") + part)
    return sha.hexdigest()[:16]


def images_dir() -> Path:
    folder = cache_dir() / "images"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _spec(name: str) -> ImageSpec:
    if name not in IMAGES:
        raise DeployError(f"no image named {name!r}; known: {', '.join(sorted(IMAGES))}")
    return IMAGES[name]


def version_args(name: str) -> dict[str, str]:
    """The build args image *name* takes from config/versions.yml (``POSTGRESQL=15``...)."""
    return {key.upper(): version(key, VERSIONS_FILE) for key in _spec(name).versions}


def digest(name: str) -> str:
    """The inputs digest of image *name*: its own inputs and its base image's digest."""
    spec = _spec(name)
    extra = tuple(f"{k}={v}" for k, v in sorted(version_args(name).items()))
    if spec.base:
        extra += (f"base={digest(spec.base)}",)
    return image_inputs_digest(REPO / spec.definition, [REPO / p for p in spec.pins], extra=extra)


def chain(name: str) -> list[str]:
    """Image *name* after every image it starts from, bases first."""
    spec = _spec(name)
    return (chain(spec.base) if spec.base else []) + [name]


def planned(name: str) -> Artifact:
    """Where image *name* is (or will be) for the current inputs; builds nothing."""
    found = digest(name)
    return Artifact(images_dir() / f"{name}-{found}.sif", found)


def debian_mirror(apt_dir: Path = APT_SOURCES) -> str:
    """The Debian archive of this machine's apt sources (not the security archive)."""
    if os.environ.get("TOPPIPE_DEBIAN_MIRROR"):
        return os.environ["TOPPIPE_DEBIAN_MIRROR"].rstrip("/")
    uris: list[str] = []
    one_line = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for file in one_line:
        for line in _read(file).splitlines():
            words = [w for w in line.split("#", 1)[0].split() if not w.startswith("[") and not w.endswith("]")]
            if len(words) >= 2 and words[0] == "deb":
                uris.append(words[1])
    for file in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        for line in _read(file).splitlines():
            key, _, value = line.partition(":")
            if key.strip().lower() == "uris":
                uris += value.split()
    uris = [u.rstrip("/") for u in uris]
    for pick in (lambda u: u.endswith("/debian"), lambda u: "debian" in u and "security" not in u):
        found = [u for u in uris if pick(u)]
        if found:
            return found[0]
    raise DeployError(f"no Debian archive in {apt_dir}/sources.list(.d); set TOPPIPE_DEBIAN_MIRROR=URL")


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def apptainer_command() -> str:
    found = shutil.which("apptainer") or shutil.which("singularity")
    if not found:
        raise DeployError("neither apptainer nor singularity is on PATH; images need one (the lab installs /usr/local/bin/apptainer)")
    return found


class _Progress:
    """Every line to the log file; a summary of them to ``note``."""

    _PHASE = re.compile(r"^I: (Retrieving|Validating|Checking|Unpacking|Configuring|Installing|Extracting|Base system installed)")
    _SHOWN = re.compile(r"^(INFO|WARNING|ERROR|FATAL)\b|^==> |^error: |^\S*(ERROR|FATAL)|^(Collecting|Successfully installed|No broken requirements)|^E: |^W: ")

    def __init__(self, log, note):
        self.log, self.note, self.tail, self.phases = log, note, deque(maxlen=LOG_TAIL), set()

    def __call__(self, line: str) -> None:
        line = re.sub(r"\x1b\[[0-9;]*m", "", line.rstrip("\n"))
        self.log.write(line + "\n")
        self.log.flush()
        if not line.strip():
            return
        self.tail.append(line)
        phase = self._PHASE.match(line)
        if phase:  # debootstrap: the first line of each phase, not one per package
            if phase.group(1) not in self.phases:
                self.phases.add(phase.group(1))
                self.note(f"  debootstrap: {line[3:]}")
        elif self._SHOWN.search(line) and "No default remote in use" not in line:
            self.note(f"  {line}")


def _run(argv: list[str], progress: _Progress) -> int:
    """Run *argv* in the repository, feeding its merged output to *progress*."""
    progress.log.write(f"$ {' '.join(argv)}\n")
    proc = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace")  # fmt: skip
    try:
        for line in proc.stdout:
            progress(line)
        return proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise


def build_args(name: str, found_digest: str, base: Path | None) -> dict[str, str]:
    """The build args of image *name* that its definition declares (``{{ KEY }}``): the
    base image or the Debian suite and mirror (those first), the CA bundle, its versions,
    its digest. (The twin of image_build_args in scripts/toppipe.d/build.sh.)"""
    first = {"BASE": str(base)} if base else {"SUITE": debian_suite(), "MIRROR": debian_mirror()}
    values = {**first, "CA_BUNDLE": str(CA_BUNDLE), **version_args(name), "INPUTS_DIGEST": found_digest}
    declared = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", (REPO / _spec(name).definition).read_text()))
    return {key: value for key, value in values.items() if key in declared}


def build(name: str, note=lambda text: None) -> Artifact:
    """Image *name* for the current inputs: the cached SIF, or a new one built now by
    :data:`BUILD_IMAGE` (see the module doc)."""
    spec = _spec(name)
    target = planned(name)
    if target.path.is_file():
        return target
    base = build(spec.base, note) if spec.base else None
    if not host_shell.relayed():  # (from the client image, the host's Apptainer builds)
        apptainer_command()
    if not CA_BUNDLE.is_file():
        raise DeployError(f"{CA_BUNDLE} is missing; the image build needs this machine's CA bundle for pip and apt")
    values = build_args(name, target.digest, base.path if base else None)
    command = [str(BUILD_IMAGE), str(target.path), spec.definition, str(base.path) if base else "-"]
    command += [a for key, value in values.items() for a in ("--build-arg", f"{key}={value}")]
    log_path = target.path.with_suffix(".log")
    origin = f"from image {spec.base}" if base else f"Debian {debian_suite()} from {debian_mirror()}"
    note(f"building image {name} ({spec.definition}, {origin}); log: {log_path}")
    with open(log_path, "w") as log:
        progress = _Progress(log, note)
        code = _run(host_shell.argv(shlex.join(command)), progress)  # (from the client image: on the host)
    if code != 0:
        tail = "\n    ".join(progress.tail)
        raise DeployError(f"image {name}: the build failed (exit {code}); full log {log_path}; last lines:\n    {tail}")
    return target
