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
*Not root* (a desktop; also from the client image, where the build runs on
the host through the relay): ``scripts/toppipe.d/user-build``, in bash, which
the entry script also runs for the client image where there is no Python. A
Debian base is ``apptainer build --fakeroot`` (rootless, the documented way);
an image on a base is the three steps below, each in a namespace that maps
root to the user and other ids to the user's subordinate range (``unshare
--map-auto --map-root-user``), because apptainer's own ``--fakeroot`` build of
a ``localimage`` fails as a user in unpacking the base. Both need a line for
the user in ``/etc/subuid`` and ``/etc/subgid`` (``apptainer config fakeroot
--add USER``); without one user-build says so and what to ask the admin for.

*Root* (this machine, the lab, CI): ``--fakeroot`` refuses to run without a
``root:`` line in ``/etc/subuid``, which we do not write into the machine's
configuration; and a plain root build fails in ``%post`` because apptainer
asks for every capability while this machine withholds CAP_SYS_RESOURCE
(lab facts). What works, in three steps, all from the same definition file:

1. the bootstrap only (the header of the definition, no sections) as real
   root: debootstrap needs real device nodes (``mknod``), a namespace cannot
   make them. An image with a base instead gets the base's root filesystem
   unpacked by ``unsquashfs`` (apptainer's own unpacking runs in a container
   that may not chown here);
2. ``apptainer build --sandbox --update`` of the full definition over that
   tree (``%files``, ``%post``, labels, environment), inside a user namespace
   that maps every id to itself: root there has every capability of that
   namespace, and the tree's owners (root, ``shadow``, ``staff``...) are kept;
3. the tree packed into a SIF as real root (no ``%post``: no capability asked).

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

Every SIF is packed with gzip at level 1 (:data:`SQUASHFS_ARGS`): measured on
the client image (1.2 GB unpacked, one core), mksquashfs's default level 9 took
121 s for 330 MB and level 1 took 15 s for 375 MB. gzip, not zstd (6 s, 344 MB),
because every Apptainer and SingularityCE a site may run reads gzip.

Every output line of apptainer goes to ``<cache>/images/<name>-<digest>.log``;
``note`` gets a summary (the steps, debootstrap's phases, pip's results), and
a failure raises :class:`deploy.DeployError` with the log's last lines.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import platform
import re
import shlex
import shutil
import subprocess
import tempfile
import time
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


#: An image built by a user (scripts/toppipe.d/user-build explains how); the entry script
#: runs it too, for the client image on a desktop without Python.
USER_BUILD = REPO / "scripts" / "toppipe.d" / "user-build"
#: mksquashfs's arguments for every SIF: fast gzip (see the module doc; user-build has them too).
SQUASHFS_ARGS = ("--mksquashfs-args", "-comp gzip -Xcompression-level 1")


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


def bootstrap_header(definition: str) -> str:
    """The header of a definition (its ``Bootstrap:`` lines) plus its ``%arguments`` section."""
    lines = definition.splitlines()
    first = next((i for i, line in enumerate(lines) if line.startswith("%")), len(lines))
    header, rest = lines[:first], lines[first:]
    arguments, inside = [], False
    for line in rest:
        if line.startswith("%"):
            inside = line.split()[0] == "%arguments"
        if inside:
            arguments.append(line)
    return "\n".join(header + arguments) + "\n"


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


def _run(argv: list[str], progress: _Progress, *, userns: bool = False, env=None, cwd=REPO) -> int:
    """Run *argv*, feeding its merged output to *progress*; in an identity-mapped user namespace if *userns*."""
    if userns:
        argv = ["unshare", "--user", "--mount", "--", "sh", "-c", 'read -r _ && exec "$@"', "sh", *argv]
    progress.log.write(f"$ {' '.join(argv)}\n")
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.PIPE if userns else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")  # fmt: skip
    try:
        if userns:
            _map_identity(proc)
        for line in proc.stdout:
            progress(line)
        return proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise


def _map_identity(proc: subprocess.Popen) -> None:
    """Map every uid and gid of *proc*'s new user namespace to itself, then let it go on."""
    own, deadline = os.readlink("/proc/self/ns/user"), time.monotonic() + 10
    while os.readlink(f"/proc/{proc.pid}/ns/user") == own:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise DeployError("could not start a user namespace for the image build (unshare --user)")
        time.sleep(0.005)
    for kind in ("uid_map", "gid_map"):
        Path(f"/proc/{proc.pid}/{kind}").write_text("0 0 4294967295\n")
    proc.stdin.write("\n")
    proc.stdin.close()


def _unpack_argv(app: str, sif: Path, tree: Path) -> list[str]:
    """unsquashfs of the root filesystem partition of *sif* into *tree*."""
    listing = subprocess.run([app, "sif", "list", str(sif)], capture_output=True, text=True).stdout
    for line in listing.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) >= 5 and cells[4].startswith("FS"):
            offset = cells[3].split("-")[0]
            return ["unsquashfs", "-q", "-n", "-d", str(tree), "-o", offset, str(sif)]
    raise DeployError(f"{sif}: no root filesystem partition in 'apptainer sif list'; rebuild it (delete the file)")


def _drop_devices(tree: Path) -> None:
    """Remove the device nodes debootstrap made in ``/dev``: a user namespace cannot copy them, and
    apptainer mounts the host's ``/dev`` into every container anyway."""
    for entry in (tree / "dev").iterdir() if (tree / "dev").is_dir() else ():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def build_args(name: str, found_digest: str, base: Path | None) -> dict[str, str]:
    """The build args of image *name* that its definition declares (``{{ KEY }}``): the
    base image or the Debian suite and mirror (those first), the CA bundle, its versions,
    its digest. (The twin of image_build_args in scripts/toppipe.d/build.sh.)"""
    first = {"BASE": str(base)} if base else {"SUITE": debian_suite(), "MIRROR": debian_mirror()}
    values = {**first, "CA_BUNDLE": str(CA_BUNDLE), **version_args(name), "INPUTS_DIGEST": found_digest}
    declared = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", (REPO / _spec(name).definition).read_text()))
    return {key: value for key, value in values.items() if key in declared}


def build(name: str, note=lambda text: None) -> Artifact:
    """Image *name* for the current inputs: the cached SIF, or a new one built now (see the module doc)."""
    spec = _spec(name)
    def_file = REPO / spec.definition
    target = planned(name)
    if target.path.is_file():
        return target
    base = build(spec.base, note) if spec.base else None
    as_user = os.geteuid() != 0 or host_shell.relayed()  # (from the client image: on the host)
    app = "apptainer" if as_user else apptainer_command()
    if not CA_BUNDLE.is_file():
        raise DeployError(f"{CA_BUNDLE} is missing; the image build needs this machine's CA bundle for pip and apt")
    # what the bootstrap step (1/3) needs comes first: the suite and mirror, or the base image
    values = build_args(name, target.digest, base.path if base else None)
    args = [a for key, value in values.items() for a in ("--build-arg", f"{key}={value}")]
    n_first = 2 * sum(1 for key in ("BASE", "SUITE", "MIRROR") if key in values)
    definition = def_file  # its %files sources are relative to REPO, the build's working folder
    log_path = target.path.with_suffix(".log")
    origin = f"from image {spec.base}" if base else f"Debian {debian_suite()} from {debian_mirror()}"
    note(f"building image {name} ({spec.definition}, {origin}); log: {log_path}")
    work = Path(tempfile.mkdtemp(prefix=f".build-{name}-", dir=images_dir()))
    # %post must not see this machine's /tmp or home folder (apptainer binds both by default)
    env = {**os.environ, "APPTAINER_TMPDIR": str(work), "SINGULARITY_TMPDIR": str(work),
           "APPTAINER_CACHEDIR": str(images_dir() / "apptainer-cache"), "APPTAINER_NO_MOUNT": "tmp,home",
           "SINGULARITY_NO_MOUNT": "tmp,home"}  # fmt: skip
    sif = work / "image.sif"
    try:
        with open(log_path, "w") as log:
            progress = _Progress(log, note)
            if as_user:
                command = [str(USER_BUILD), str(sif), str(definition), str(base.path) if base else "-", *args]
                steps = [(f"build as {getpass.getuser()} ({USER_BUILD.name})", host_shell.argv(shlex.join(command)), False)]
            else:
                (work / "bootstrap.def").write_text(bootstrap_header(def_file.read_text()))
                tree = work / "rootfs"
                steps = [
                    # debootstrap needs real root (mknod); a base image is unpacked by unsquashfs
                    # as root (apptainer's own unpacking runs in a container, which lacks chown here)
                    ("1/3 unpack image " + spec.base, _unpack_argv(app, base.path, tree), False) if base else
                    ("1/3 bootstrap (debootstrap, as root)", [app, "build", "--sandbox", *args[:n_first], str(tree), str(work / "bootstrap.def")], False),
                    ("2/3 %files and %post (user namespace)", [app, "build", "--sandbox", "--update", *args, str(tree), str(definition)], True),
                    ("3/3 pack the SIF", [app, "build", *SQUASHFS_ARGS, str(sif), str(tree)], False),
                ]  # fmt: skip
            for title, argv, userns in steps:
                note(f"  {title}")
                if userns:
                    _drop_devices(work / "rootfs")
                    # the base's labels would stay: apptainer keeps a label that exists rather than replace it
                    (work / "rootfs" / ".singularity.d" / "labels.json").unlink(missing_ok=True)
                started = time.monotonic()
                code = _run(argv, progress, userns=userns, env={**env, "APPTAINER_NO_MOUNT": "tmp,home,sys", "SINGULARITY_NO_MOUNT": "tmp,home,sys"} if userns else env)
                if code == 0:
                    note(f"  {title}: done in {time.monotonic() - started:.0f} s")
                else:
                    tail = "\n    ".join(progress.tail)
                    raise DeployError(f"image {name}: {title} failed (exit {code}); full log {log_path}; last lines:\n    {tail}")
        os.replace(sif, target.path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target
