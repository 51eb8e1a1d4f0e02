"""Load a pipeline from a ``.py`` file or an importable module: its ``@task`` functions, in source order."""

from __future__ import annotations

import hashlib
import importlib.util
import linecache
import os
import re
import sys
import traceback
from pathlib import Path
from types import ModuleType

from toppipe.pipeline import modules
from toppipe.pipeline.graph import Pipeline, PipelineError, TaskOptions
from toppipe.pipeline.hashing import code_hash

PIPELINES_FOLDER = "pipelines"


def load(source: str | os.PathLike, project: str | os.PathLike | None = None) -> Pipeline:
    """The pipeline in *source*: a ``.py`` path (relative to *project*), a name in
    ``<project>/pipelines``, an importable module (``"mypkg.pipeline"``, see
    :mod:`toppipe.pipeline.modules`) or the folder of a package.

    A file is read and run afresh on every call, so an edited file is picked
    up; a module is imported again when a file of its package changed. Its
    tasks are the ``@task`` functions in its namespace (imported ones too), in
    the order they were bound; its name is ``PIPELINE_NAME``, else the file's
    stem (a module's dotted name).
    """
    module_name = modules.module_name(source, project, PIPELINES_FOLDER)
    if module_name is not None:
        return load_module(module_name)
    path = resolve(source, project)
    return _pipeline_of(_execute(path), path, path.stem)


def load_module(name: str) -> Pipeline:
    """The pipeline in module *name*, imported (again if a file of its package changed)."""
    module = modules.import_fresh(name)
    pipeline = _pipeline_of(module, Path(module.__file__).resolve(), name)
    if not pipeline.tasks:
        raise PipelineError(f"module {name} ({module.__file__}) has no @task functions; name the module that has them")
    pipeline.module = name
    return pipeline


def _pipeline_of(module: ModuleType, path: Path, default: str) -> Pipeline:
    name = getattr(module, "PIPELINE_NAME", default)
    if not isinstance(name, str) or not name.strip():
        raise PipelineError(f"{path}: PIPELINE_NAME must be a non-empty string, not {name!r}")
    marked = [v for v in vars(module).values() if isinstance(getattr(v, "__toppipe_task__", None), TaskOptions)]
    tasks = list({id(func): func for func in marked}.values())  # binding order is source order
    try:
        pipeline = Pipeline(name, tasks, source=path)
    except PipelineError as error:
        raise PipelineError(f"{path}: {error}") from None
    for found in pipeline.tasks.values():
        code_hash(found.func)  # remembered now, while linecache holds the text that ran
    return pipeline


def resolve(source: str | os.PathLike, project: str | os.PathLike | None = None) -> Path:
    """The absolute path of *source*; a PipelineError saying what was looked for if it is missing."""
    root = Path(project if project is not None else Path.cwd()).expanduser()
    text = os.fspath(source)
    by_name = isinstance(source, str) and not text.endswith(".py") and "/" not in text and os.sep not in text
    path = (root / PIPELINES_FOLDER / f"{text}.py") if by_name else root / Path(text).expanduser()
    path = path.resolve()
    if path.is_file():
        return path
    if by_name:
        folder = root / PIPELINES_FOLDER
        found = sorted(p.stem for p in folder.glob("*.py") if not p.name.startswith("_")) if folder.is_dir() else []
        available = f"pipelines there: {', '.join(found)}" if found else f"there is no pipeline in {folder}"
        raise PipelineError(
            f"no pipeline {text!r}: looked for {path} ({available}); pass project= or the path of a .py file"
        )
    raise PipelineError(f"no pipeline file {path}: {text!r} was looked up from {root.resolve()}; check the path")


def module_name_for(path: Path) -> str:
    """The module name a pipeline file is loaded under: ``toppipe_pipeline_<stem>_<8 hex of its path>``.

    One name per file: two projects' ``clean.py`` do not collide, and loading a
    file again replaces its module instead of adding one per call. The module
    is put in ``sys.modules`` (code in it may need its own module: dataclasses,
    ``typing.get_type_hints``, pickle in this process) and, when cloudpickle is
    installed, registered to be pickled *by value*: workers cannot import this
    name, so its functions must travel as code, not as a reference.
    """
    stem = re.sub(r"\W", "_", path.stem)
    return f"toppipe_pipeline_{stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"


def _execute(path: Path) -> ModuleType:
    """Run *path* as a fresh module, compiled from the text read now (no ``__pycache__``)."""
    name = module_name_for(path)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    stat = path.stat()
    text = importlib.util.decode_source(path.read_bytes())
    # Tracebacks and inspect.getsource show the text that ran, until the file changes again.
    linecache.cache[str(path)] = (stat.st_size, stat.st_mtime, text.splitlines(keepends=True), str(path))
    previous = sys.modules.get(name)
    sys.modules[name] = module
    try:
        exec(compile(text, str(path), "exec", dont_inherit=True), module.__dict__)
    except Exception as error:
        if previous is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = previous
        raise PipelineError(f"{path} failed to load: {_one_line(error, path)}; fix it and load again") from None
    _pickle_by_value(module)
    return module


def _one_line(error: BaseException, path: Path) -> str:
    """``line N: Type: message``, the line being the last one of *path* involved."""
    if isinstance(error, SyntaxError) and error.filename == str(path):
        return f"line {error.lineno}: SyntaxError: {error.msg}"
    lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__) if frame.filename == str(path)]
    message = str(error).strip().splitlines()
    where = f"line {lines[-1]}: " if lines else ""
    return f"{where}{type(error).__name__}" + (f": {message[0]}" if message else "")


def _pickle_by_value(module: ModuleType) -> None:
    try:
        import cloudpickle
    except ImportError:  # nothing will pickle these functions by reference then
        return
    cloudpickle.register_pickle_by_value(module)
