"""The project's code as the client saved it, and the same code on the workers.

On the client, :func:`modules_used` names the project modules a task uses,
directly or through other project modules, each with the digest of its file
now: that goes into the task's cache key. :func:`snapshot` takes the digest
of every project file at the start of a run.

On a worker, :func:`sync_modules` waits until the synced copy of each of
those modules has the digest the run recorded (lsyncd may be a moment
behind a save), reloads modules that are loaded at another version, and
fails with one line naming the file if the copy stays different: a task
never computes with other code than its key names.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib
import os
import sys
import threading
import types
from dataclasses import dataclass

from toppipe.pipeline import packages
from toppipe.pipeline.reads import Snapshot, file_digest, wait_for_digest
from toppipe.sync_exclude import SYNC_EXCLUDE

#: Modules the pipeline loader made: their functions travel by value, so workers need no file.
PIPELINE_MODULES = "toppipe_pipeline_"


@dataclass(frozen=True)
class ModuleUse:
    """A module a task uses: its name, its file (relative to the project for a project module,
    else absolute), its digest; *kind* is ``project``, ``package`` (installed: *distribution* at
    *version*) or ``outside`` (a folder the workers do not see, :mod:`toppipe.pipeline.packages`)."""

    name: str
    path: str
    digest: str
    kind: str = "project"
    distribution: str | None = None
    version: str | None = None

    @property
    def by_value(self) -> bool:
        """Its functions travel with the task (a pipeline file, or the script that started the run)."""
        return self.name.startswith(PIPELINE_MODULES) or self.name == "__main__"


def _excluded(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in SYNC_EXCLUDE)


def snapshot(project: str) -> Snapshot:
    """Every file of *project* that the sync sends, with its digest (unchanged files are not read again)."""
    files = {}
    root = os.path.realpath(project)
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not _excluded(d))
        rel = os.path.relpath(folder, root)
        for name in names:
            if _excluded(name):
                continue
            found = file_digest(os.path.join(folder, name))
            if found is not None:
                files[name if rel == "." else f"{rel}/{name}"] = found[1]
    return Snapshot(files)


def modules_used(func, project: str | None) -> tuple[ModuleUse, ...]:
    """The modules *func* uses, dependencies first: through the global names of its code and the
    variables it closes over (a module, or a function or class of one), the modules it imports,
    and so on through those modules' own globals. Followed: project modules, the modules of the
    installed package *func* was defined in, and outside code (:func:`packages.classify`)."""
    root = os.path.realpath(project) + os.sep if project else None
    home = packages.home_package(func)
    order: list[ModuleUse] = []
    seen: set[str] = set()
    versions: dict[str, str | None] = {}  # distribution -> version, read once per call

    def followed(value) -> tuple[types.ModuleType, str, tuple] | None:
        module = value if isinstance(value, types.ModuleType) else sys.modules.get(getattr(value, "__module__", None) or "")
        path = getattr(module, "__file__", None)
        if not path:
            return None
        real = os.path.realpath(path)
        by_value = module.__name__.startswith(PIPELINE_MODULES) or module.__name__ == "__main__"
        if by_value and not (root and real.startswith(root)):
            return None  # (a pipeline file or script outside the project travels by value)
        found = packages.classify(module, real, root, home)
        return (module, real, found) if found and os.path.isfile(real) else None

    def visit(module: types.ModuleType, real: str, kind: str, distribution: str | None) -> None:
        if module.__name__ in seen:
            return
        seen.add(module.__name__)
        digest = file_digest(real)
        imported = [sys.modules.get(name) for name in _imports(module, real, digest[1] if digest else "")]
        for value in [*imported, *list(vars(module).values())]:
            found = followed(value)
            if found is not None and found[0] is not module:
                visit(found[0], found[1], *found[2])
        if digest is not None:
            path = real[len(root):] if kind == "project" else real
            if distribution and distribution not in versions:
                versions[distribution] = packages.version_of(distribution)
            version = versions.get(distribution) if distribution else None
            order.append(ModuleUse(module.__name__, path, digest[1], kind, distribution, version))

    values = [sys.modules.get(name) if value is None else value for name, value in _referenced(func)]
    for value in [sys.modules.get(getattr(func, "__module__", None) or ""), *values] if home else values:
        found = followed(value)
        if found is not None:
            visit(found[0], found[1], *found[2])
    return tuple(order)


def reached_digests(func, uses: tuple[ModuleUse, ...], project: str | None) -> dict[str, str]:
    """Per module of *uses*: the digest of what *func* can reach in it, that is the module without
    the top-level functions that no reached code names (names compared, so a name shared by two
    functions keeps both). An edit to a helper changes the keys of the tasks whose code names it,
    directly or through other helpers in any module, and no others; comments do not count. A module
    of an installed package adds its distribution's name and version."""
    import hashlib

    parts = {use.name: _definitions(os.path.join(project or "", use.path), use.digest) for use in uses}
    names = {name for name, _ in _referenced(func) if name}
    for rest_names, _, _ in parts.values():
        names |= rest_names  # module-level code runs at import: what it names is reached
    reached: set[tuple[str, str]] = set()
    grown = True
    while grown:
        grown = False
        for module, (_, _, functions) in parts.items():
            for name, (_, named) in functions.items():
                if name in names and (module, name) not in reached:
                    reached.add((module, name))
                    names |= named
                    grown = True
    found = {}
    installed = {use.name: f"{use.distribution}=={use.version}" for use in uses if use.kind == "package"}
    for module, (_, rest, functions) in parts.items():
        kept = [rest] + [f"{name}\0{text}" for name, (text, _) in sorted(functions.items()) if (module, name) in reached]
        if module in installed:  # an upgrade changes the key even where the reached code is the same
            kept.append(installed[module])
        found[module] = hashlib.sha256("\0".join(kept).encode()).hexdigest()[:16]
    return found


#: CPython 3.11 keeps the AST builder's recursion depth per interpreter, not per thread: two
#: threads parsing at once fail with "AST constructor recursion depth mismatch" (gh-106905).
_PARSING = threading.Lock()


def _parse(path: str) -> ast.Module:
    """The AST of the file at *path*; an empty module if it cannot be read or parsed."""
    try:
        with open(path, "rb") as file:
            source = file.read()
        with _PARSING:
            return ast.parse(source, path)
    except (OSError, SyntaxError, ValueError):
        return ast.Module(body=[], type_ignores=[])


_defined: dict[tuple[str, str], tuple[set[str], str, dict[str, tuple[str, set[str]]]]] = {}


def _definitions(path: str, digest: str) -> tuple[set[str], str, dict[str, tuple[str, set[str]]]]:
    """(names the module-level code uses, its text, top-level function -> (text, names it uses)) of
    the file at *path*; texts are ASTs dumped, without line numbers or comments."""
    if (path, digest) not in _defined:
        tree = _parse(path)
        functions, rest = {}, []
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                previous = functions.get(node.name, ("", set()))
                functions[node.name] = (previous[0] + ast.dump(node), previous[1] | _names_in(node))
            else:
                rest.append(node)
        module = ast.Module(body=rest, type_ignores=[])
        _defined[(path, digest)] = (_names_in(module), ast.dump(module), functions)
    return _defined[(path, digest)]


def _names_in(node: ast.AST) -> set[str]:
    return {n.id if isinstance(n, ast.Name) else n.attr for n in ast.walk(node) if isinstance(n, (ast.Name, ast.Attribute))}


def helpers_by_value(func) -> dict[str, str]:
    """Functions and classes *func* uses that travel with it by value (written in a notebook or in
    the pipeline file), through their own uses in turn: qualified name -> digest of their code.
    Workers get their code with the task, so no file shows their edits: the key must."""
    from toppipe.pipeline.hashing import code_hash

    found: dict[str, str] = {}
    stack = [func]
    while stack:
        current = stack.pop()
        for _, value in _referenced(current):
            if value is func or not _by_value(value):
                continue
            name = f"{value.__module__}.{value.__qualname__}"
            if name not in found:
                found[name] = _code_digest(value, code_hash)
                if isinstance(value, types.FunctionType):
                    stack.append(value)
    return found


def _referenced(func) -> list[tuple[str | None, object]]:
    """(name, value) of every global name *func*'s code reads (value None where its globals lack
    the name, e.g. ``import a.b`` inside it), then ``(None, value)`` of each variable it closes over."""
    names, codes = set(), [getattr(func, "__code__", None)]
    while codes:
        code = codes.pop()
        if code is not None:
            names |= set(code.co_names)
            codes += [c for c in code.co_consts if hasattr(c, "co_names")]
    scope = getattr(func, "__globals__", {})
    found: list[tuple[str | None, object]] = [(name, scope.get(name)) for name in sorted(names)]
    for cell in getattr(func, "__closure__", None) or ():
        try:
            found.append((None, cell.cell_contents))
        except ValueError:  # a cell not filled yet
            continue
    return found


def _by_value(value) -> bool:
    module = getattr(value, "__module__", None) or ""
    return isinstance(value, (types.FunctionType, type)) and (module == "__main__" or module.startswith(PIPELINE_MODULES))


def _code_digest(value, code_hash) -> str:
    if isinstance(value, types.FunctionType):
        return code_hash(value)
    import hashlib
    import inspect

    try:
        text = inspect.getsource(value)
    except (OSError, TypeError):
        text = repr(sorted((k, getattr(v, "__code__", v).__repr__()) for k, v in vars(value).items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_parsed: dict[tuple[str, str], tuple[str, ...]] = {}  # (file, digest) -> the module names it imports


def _imports(module: types.ModuleType, path: str, digest: str) -> tuple[str, ...]:
    """The module names *module*'s file imports (``from x import NAME`` may name a module
    ``x.NAME``), read from its source: names bound by ``from x import CONSTANT`` carry no module."""
    if (path, digest) not in _parsed:
        tree = _parse(path)
        names: list[str] = []
        package = module.__package__ or ""
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    names += [".".join(parts[: i + 1]) for i in range(len(parts))]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                names += [base, *(f"{base}.{alias.name}" for alias in node.names)]
        _parsed[(path, digest)] = tuple(dict.fromkeys(n for n in names if n))
    return _parsed[(path, digest)]


_loaded: dict[str, str] = {}  # module name -> digest of the file it was last loaded from, on this worker


def sync_modules(uses: tuple[ModuleUse, ...], project: str | None) -> None:
    """Make the loaded modules the versions *uses* names (see the module doc and
    :func:`packages.sync_imported` for installed and outside modules)."""
    packages.sync_imported(uses)
    if not project:
        return
    synced = [use for use in uses if not use.by_value and use.kind == "project"]
    for use in synced:
        wait_for_digest(os.path.join(project, use.path), use.digest)
    if any(use.name in sys.modules and _loaded.get(use.name) != use.digest for use in synced):
        for use in synced:  # dependencies first: a module holding names of a reloaded one is reloaded after it
            if use.name in sys.modules:
                importlib.reload(sys.modules[use.name])
    for use in synced:
        _loaded[use.name] = use.digest  # what is loaded now, or what the next import reads
