"""What a task's result is: its cache key (its code, what it reaches of the project, its params,
its upstream tasks' keys), its dask key and the run's provenance.

A key changes with any of these and with nothing else, so the cache never serves a result of
other code (see :mod:`toppipe.pipeline.sources` for what "reaches" means).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

from toppipe.pipeline import sources
from toppipe.pipeline.graph import REQUIRED, Pipeline, PipelineError, Task
from toppipe.pipeline.hashing import code_hash, value_hash
from toppipe.pipeline.sources import ModuleUse


def effective_params(pipeline: Pipeline, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """The task's params: its defaults, overridden by the run's *params* of the same name."""
    return task_params(pipeline.name, pipeline.tasks[name], params)


def task_params(pipeline: str, task: Task, params: dict[str, Any]) -> dict[str, Any]:
    found = {}
    for param, default in task.params.items():
        value = params.get(param, default)
        if value is REQUIRED:
            raise PipelineError(f"pipeline {pipeline}: task {task.name} needs param {param!r}; pass params={{{param!r}: ...}}")
        found[param] = value
    return found


def cache_keys(pipeline: Pipeline, names: list[str], params: dict[str, Any], project: str | None = None,
               uses: dict[str, tuple[ModuleUse, ...]] | None = None) -> dict[str, str]:
    """Per task: sha256 of its code, the helpers that travel with it by value, what it reaches of
    the project modules it uses (:func:`sources.reached_digests`), its params and its upstream tasks' keys (in run order).
    *uses* receives each task's modules."""
    keys: dict[str, str] = {}
    tasks = pipeline.tasks  # (a copy each time it is read)
    code_parts: dict[tuple, tuple] = {}  # what functions of the same code, globals and closure share
    for name in names:
        task = tasks[name]
        shared = _code_identity(task.func)
        found = code_parts.get(shared) if shared is not None else None
        if found is None:
            modules = sources.modules_used(task.func, project)
            found = (modules, code_hash(task.func), sources.helpers_by_value(task.func),
                     sources.reached_digests(task.func, modules, project) if modules else {})  # fmt: skip
            if shared is not None:
                code_parts[shared] = found
        modules = found[0]
        if uses is not None:
            uses[name] = modules
        parts = {
            "code": found[1],
            "helpers": found[2],
            "uses": found[3],
            "params": {p: value_hash(v) for p, v in sorted(task_params(pipeline.name, task, params).items())},
            "upstream": {u: keys[u] for u in task.upstream},
        }
        if task.map is not None:  # (left out otherwise: keys made before maps existed stay valid)
            parts["map"] = task.map  # each element's key adds its own input: the source's key stays out
            del parts["upstream"][task.map]
        keys[name] = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]
    return keys


def _code_identity(func) -> tuple | None:
    """What the modules, helpers and code digest of *func* follow from: its code, module, globals and
    closed-over values (ten thousand tasks made by one factory are hashed once). None: hash it alone
    (not a plain function, or one that names itself: its helpers leave it out)."""
    code = getattr(func, "__code__", None)
    scope = getattr(func, "__globals__", None)
    if code is None or scope is None or any(scope.get(name) is func for name in code.co_names):
        return None
    cells = []
    for cell in func.__closure__ or ():
        try:
            cells.append(id(cell.cell_contents))
        except ValueError:  # an empty cell
            cells.append(None)
    return (code, func.__module__, id(scope), tuple(cells))


def dask_key(func, run_id: str, position: int) -> str:
    """``<function name>-<run>-<position>``: dask groups tasks by the key's first word, so the
    dashboard shows one group per function, and a run of ten thousand tasks made from one
    function is one group (a group per task makes the scheduler's bookkeeping quadratic)."""
    name = "".join(c if c.isalnum() or c == "_" else "_" for c in getattr(func, "__name__", "task")) or "task"
    return f"{name}-{run_id}-{position}"


def provenance(pipeline: Pipeline, record: dict, keys: dict[str, str]) -> dict:
    """Where a run came from: the pipeline's source, the project's commit, images, deployment."""
    source = Path(pipeline.source) if pipeline.source else None
    return {
        "pipeline_source": hashlib.sha256(source.read_bytes()).hexdigest()[:16] if source and source.is_file() else None,
        "tasks": {name: key[:16] for name, key in keys.items()},
        "graph": {name: {"inputs": list(t.inputs), "after": list(t.after), **({"map": t.map} if t.map else {})}
                  for name, t in pipeline.tasks.items() if name in keys},
        "project_commit": _git_commit(Path(record.get("project_local") or ".")),
        "images": record.get("images", {}),
        "deployment": record.get("deployment"),
    }


def _git_commit(folder: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain"], capture_output=True, text=True, timeout=5)
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
