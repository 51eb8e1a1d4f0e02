"""Code a task uses from outside the project: installed packages and other folders.

An *installed* module belongs to a distribution (a ``*.dist-info`` on
``sys.path``, an editable install included). A task defined in an installed
package is keyed on that distribution's name and version and, like project
modules, on what it reaches of each module of the package it uses
(:func:`toppipe.pipeline.sources.reached_digests`). Other installed packages
(numpy, pandas...) are the site's pinned environment and are not followed.

An *outside* module is user code that is neither in the project, nor in the
Python environment, nor installed (a folder of another project put on the
client's ``sys.path``): it is keyed like a project module, but the site's
workers do not see it, so a run on them is refused with one line
(:func:`refuse_outside`); ``on="local"`` runs it here.

On a worker (and in a local run), :func:`sync_imported` checks that the
installed version and each module's file are the ones the key names, and
reloads modules loaded at another version, dependencies first.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import os
import socket
import sys
import types

from toppipe.pipeline.graph import PipelineError
from toppipe.pipeline.reads import OutOfSync, file_digest

#: toppipe's own code, which reaches the hosts with toppipe (deploy.artifacts.SHIPPED_PACKAGES): never outside code.
OWN_CODE = ("toppipe",)
#: Where the interpreter and installed packages live (never project or outside code).
ENVIRONMENT = tuple({os.path.realpath(p) + os.sep for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)})


class PackageMismatch(OutOfSync):
    """A worker imports another version of a package than the one the run was keyed on."""


class _Index:
    """Top-level module name -> distribution names, and editable installs' folders, read again
    when ``sys.path`` or a folder of it holding installs changes (an install adds or removes a
    ``*.dist-info``; the project's own folders, edited all day, are not watched)."""

    def __init__(self):
        self.stamp: tuple | None = None
        self.sites: set[str] = set()  # the folders of sys.path holding installs
        self.tops: dict[str, list[str]] = {}
        self.editable: list[tuple[str, str]] = []  # (folder + sep, distribution name)

    def _stamp(self) -> tuple:
        return tuple((p, _mtime(p) if p in self.sites else None) for p in sys.path)

    def refresh(self) -> None:
        if self._stamp() == self.stamp:
            return
        self.sites = {p for p in sys.path if _holds_installs(p)}
        self.stamp, self.tops, self.editable = self._stamp(), dict(importlib.metadata.packages_distributions()), []
        for dist in importlib.metadata.distributions():
            try:
                direct = json.loads(dist.read_text("direct_url.json") or "{}")
            except ValueError:
                continue
            url = direct.get("url", "")
            if direct.get("dir_info", {}).get("editable") and url.startswith("file://"):
                self.editable.append((os.path.realpath(url[len("file://"):]) + os.sep, dist.metadata["Name"]))

    def distribution(self, top: str, real: str) -> str | None:
        self.refresh()
        names = self.tops.get(top)
        if names:
            return sorted(names)[0]
        for folder, name in self.editable:
            if real.startswith(folder):
                return name
        return None


_index = _Index()


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path or ".").st_mtime_ns
    except OSError:
        return None


def _holds_installs(path: str) -> bool:
    try:
        return any(name.endswith((".dist-info", ".egg-info")) for name in os.listdir(path or "."))
    except OSError:
        return False


def distribution_of(module_name: str, real: str) -> str | None:
    """The name of the distribution that installed *module_name* (file *real*), None if none did."""
    return _index.distribution(module_name.partition(".")[0], real)


def version_of(distribution: str) -> str | None:
    """The installed version of *distribution*, read now (an upgrade shows at once); None if absent."""
    try:
        return importlib.metadata.distribution(distribution).version
    except importlib.metadata.PackageNotFoundError:
        return None


def home_package(func) -> str | None:
    """The top-level package *func* was defined in, when that is installed (else None)."""
    module = sys.modules.get(getattr(func, "__module__", None) or "")
    path = getattr(module, "__file__", None)
    if module is None or not path:
        return None
    return module.__name__.partition(".")[0] if distribution_of(module.__name__, os.path.realpath(path)) else None


def classify(module: types.ModuleType, real: str, root: str | None, home: str | None) -> tuple[str, str | None] | None:
    """``(kind, distribution)`` of a loaded module whose file is *real*: ``("project", None)`` under
    *root*, ``("package", name)`` in the installed package *home*, ``("outside", None)`` for user code
    elsewhere; None for what is not followed (the environment, other installed packages, toppipe:
    which modules of it are imported varies, and must not change keys)."""
    top = module.__name__.partition(".")[0]
    if top in OWN_CODE:  # (its version is the site's, checked at connect; even where the project holds it)
        return None
    if root and real.startswith(root) and not real.startswith(ENVIRONMENT):
        return "project", None
    if not real.endswith(".py"):
        return None
    if top == home:
        found = distribution_of(module.__name__, real)
        return ("package", found) if found else None
    if real.startswith(ENVIRONMENT) or distribution_of(module.__name__, real):
        return None
    return "outside", None


def versions(uses) -> dict[str, str]:
    """Distribution -> version of the installed modules among *uses* (ModuleUse)."""
    return {use.distribution: use.version for use in uses if use.kind == "package"}


def refuse_outside(task: str, uses) -> None:
    """One line naming the folder when *task* uses outside code, which the site's workers cannot import."""
    for use in uses:
        if use.kind == "outside":
            folder = _folder_on_path(use.path)
            raise PipelineError(
                f"task {task} uses {use.name} from {folder}, a folder outside the project that the site's workers do "
                f"not see: move it under the project, or install it (as a package) in the site's environment on the "
                f"client and every worker host; on='local' runs it here"
            )


def _folder_on_path(path: str) -> str:
    """The ``sys.path`` folder *path* was imported from (the longest that holds it)."""
    folders = [os.path.realpath(p or ".") for p in sys.path]
    holding = [f for f in folders if path.startswith(f + os.sep)]
    return max(holding, key=len) if holding else os.path.dirname(path)


#: Module name -> digest of the file it was loaded from, in this process (the loader notes its imports too).
loaded: dict[str, str] = {}


def sync_imported(uses) -> None:
    """Check and load the installed and outside modules of *uses* at the versions the key names."""
    kept = [use for use in uses if use.kind in ("package", "outside")]
    if not kept:
        return
    host = socket.gethostname()
    for name, version in versions(kept).items():
        found = version_of(name)
        if found != version:
            raise PackageMismatch(
                f"package {name} is {found or 'not installed'} on {host}, the run was keyed on {name} {version} "
                f"(the client's): install {name}=={version} in the site's environment on every worker host"
            )
    if any(use.name not in sys.modules for use in kept):
        importlib.invalidate_caches()  # a package installed since this process looked
    for use in kept:
        path = _file_of(use)
        digest = file_digest(path) if path else None
        if digest is None or digest[1] != use.digest:
            where = f"{path} on {host}" if path else f"it is not importable on {host}"
            raise PackageMismatch(
                f"module {use.name} ({where}) is not the one the run was keyed on ({_origin(use)}); install the same "
                f"build on the client and every worker host"
            )
    if any(use.name in sys.modules and loaded.get(use.name) != use.digest for use in kept):
        for use in kept:  # dependencies first, as sources.modules_used lists them
            if use.name in sys.modules:
                importlib.reload(sys.modules[use.name])
    for use in kept:
        loaded[use.name] = use.digest


def _file_of(use) -> str | None:
    if use.kind == "outside":
        return use.path
    module = sys.modules.get(use.name)
    path = getattr(module, "__file__", None)
    if path is None:
        try:
            spec = importlib.util.find_spec(use.name)
        except (ImportError, ValueError):
            return None
        path = spec.origin if spec is not None and spec.has_location else None
    return os.path.realpath(path) if path else None


def _origin(use) -> str:
    return f"{use.distribution} {use.version}" if use.kind == "package" else use.path
