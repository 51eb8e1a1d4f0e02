"""Pipelines loaded from an importable module: an installed package's (``"mypkg.pipeline"``) or a
package folder's (a path to a folder holding ``__init__.py``).

Unlike a pipeline file, such a module is imported: its functions travel to the workers by
reference, so the workers must import the same code (see :mod:`toppipe.pipeline.packages`).
It is imported again, with the rest of its package, whenever a file of the package changed
since, so an edited helper is picked up by the next ``load`` or run.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import traceback
from pathlib import Path
from types import ModuleType

from toppipe.pipeline.graph import PipelineError
from toppipe.pipeline import packages
from toppipe.pipeline.reads import file_digest

_imported: dict[str, dict[str, str | None]] = {}  # top-level package -> {module: file digest} when last imported


def module_name(source, project, pipelines_folder: str) -> str | None:
    """The module *source* names (None when it names a ``.py`` file): a dotted name, a bare name
    that is no file of ``<project>/<pipelines_folder>`` but importable, or a package folder."""
    root = Path(project if project is not None else Path.cwd()).expanduser().resolve()
    text = os.fspath(source)
    if isinstance(source, str) and not text.endswith(".py") and all(p.isidentifier() for p in text.split(".")):
        if "." in text:
            return text
        if (root / pipelines_folder / f"{text}.py").is_file():
            return None
        return text if _findable(text) else None
    folder = (root / Path(text).expanduser()).resolve()
    return _package_folder(folder, root) if folder.is_dir() else None


def _findable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _package_folder(folder: Path, root: Path) -> str:
    """The module name of the package in *folder*: its dotted path under the project, else its name
    with its parent put first on ``sys.path`` (here only: see packages.refuse_outside)."""
    if not (folder / "__init__.py").is_file():
        raise PipelineError(f"{folder} is a folder but not a package (no __init__.py); pass a .py file in it")
    if folder.is_relative_to(root) and all(p.isidentifier() for p in folder.relative_to(root).parts):
        return ".".join(folder.relative_to(root).parts)
    if not folder.name.isidentifier():
        raise PipelineError(f"{folder}: a package folder's name must be a Python identifier, not {folder.name!r}")
    parent = str(folder.parent)
    if parent not in sys.path:
        sys.path.insert(0, parent)
    loaded = sys.modules.get(folder.name)
    if loaded is not None and not str(Path(getattr(loaded, "__file__", "") or "").resolve()).startswith(str(folder)):
        _forget(folder.name)  # another package of that name was imported: this folder's is wanted
    return folder.name


def import_fresh(name: str) -> ModuleType:
    """Module *name*, imported again with its whole package if a file of it changed since; one
    line naming it if it cannot be imported."""
    top = name.partition(".")[0]
    if top not in packages.OWN_CODE and changed(top):
        _forget(top)
    importlib.invalidate_caches()  # a package installed or a file added since
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name and (name == error.name or name.startswith(error.name + ".")):
            raise PipelineError(
                f"no pipeline module {name!r}: {error.name} is not importable here; install its package in the site's "
                f"environment (or put it under the project), or pass the path of a .py file"
            ) from None
        raise PipelineError(f"pipeline module {name} failed to load: {_one_line(error)}; fix it and load again") from None
    except Exception as error:
        raise PipelineError(f"pipeline module {name} failed to load: {_one_line(error)}; fix it and load again") from None
    if getattr(module, "__file__", None) is None:
        raise PipelineError(f"{name} is a namespace package without a file; name its pipeline module ({name}.pipeline)")
    _imported[top] = _files(top)
    packages.loaded.update({name: digest for name, digest in _imported[top].items() if digest})
    return module


def changed(top: str) -> bool:
    """True when a file of the loaded package *top* differs from when it was imported here (or it
    was imported elsewhere, so that is not known)."""
    if top not in sys.modules:
        return False
    return _imported.get(top) != _files(top)


def _files(top: str) -> dict[str, str | None]:
    found = {}
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if path and (name == top or name.startswith(top + ".")):
            digest = file_digest(os.path.realpath(path))
            found[name] = digest[1] if digest else None
    return found


def _forget(top: str) -> None:
    for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
        del sys.modules[name]


def _one_line(error: BaseException) -> str:
    """``FILE, line N: Type: message`` for the deepest frame outside the import machinery."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if not f.filename.startswith("<frozen")]
    frames = [f for f in frames if f.filename != __file__]
    if isinstance(error, SyntaxError):
        where = f"{error.filename}, line {error.lineno}: "
        return f"{where}SyntaxError: {error.msg}"
    where = f"{frames[-1].filename}, line {frames[-1].lineno}: " if frames else ""
    message = str(error).strip().splitlines()
    return f"{where}{type(error).__name__}" + (f": {message[0]}" if message else "")
