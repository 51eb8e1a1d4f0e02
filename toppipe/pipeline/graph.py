"""The pipeline graph: tasks, the edges between them, and the order they run in.

A parameter whose name is another task's name is an *input*: the task receives
that task's result. ``after=`` adds an edge without passing a result. Every
other parameter is a *param* a run may override. The graph is checked each
time it changes, so a bad edge or a cycle is reported where it was made.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping

from toppipe.errors import ToppipeError
from toppipe.pipeline import ordering


class PipelineError(ToppipeError):
    """A pipeline or one of its tasks is malformed, or names something unknown."""


class _Required:
    """The default of a param that has none: a run must supply it."""

    def __repr__(self) -> str:
        return "REQUIRED"

    def __reduce__(self) -> str:
        return "REQUIRED"  # unpickles as this module's singleton


REQUIRED = _Required()


@dataclass(frozen=True)
class TaskOptions:
    """What ``@task`` records on a function (as ``func.__toppipe_task__``)."""

    name: str | None = None
    after: tuple[str, ...] = ()
    map: str | None = None
    retries: int = 0
    on_error: str = "fail"
    timeout: float | None = None
    pool: str | None = None
    resources: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Task:
    """One node: *inputs* pass results, *after* only orders, *params* are the rest.

    A task with *map* runs once per element of that input's result (each element its own
    dask task and cache key); its result is the list of theirs, in order. A task (or an element)
    that raises, or runs longer than *timeout* seconds, runs again up to *retries* times; an element
    that still fails fails the run, or with ``on_error="continue"`` is left out of the list (and listed
    by ``run.failed()``).
    """

    name: str
    func: Callable[..., Any] = field(repr=False)
    inputs: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    map: str | None = None
    retries: int = 0
    on_error: str = "fail"
    timeout: float | None = None
    pool: str | None = None  # the worker pool it runs on (``@task(pool="bigmem")``)
    resources: tuple[tuple[str, float], ...] = ()  # what it needs of a worker (``@task(resources={"GPU": 1})``)

    @property
    def needs(self) -> dict[str, float]:
        """The dask resources a worker must offer to run it (empty: the run's placement decides)."""
        found = dict(self.resources)
        if self.pool is not None:
            found[f"pool:{self.pool}"] = 1.0
        return found

    @property
    def upstream(self) -> tuple[str, ...]:
        """The tasks this one waits for: its inputs, then its other ``after`` tasks."""
        return self.inputs + tuple(name for name in self.after if name not in self.inputs)


def _from_file(task: Task, source) -> bool:
    """True when *task*'s function was defined in the pipeline's file (not in a notebook cell)."""
    code = getattr(task.func, "__code__", None)
    return code is not None and Path(code.co_filename) == Path(source)


def task(func: Callable | None = None, /, *, after: str | Iterable[str] = (), name: str | None = None,
         map: str | None = None, retries: int = 0, on_error: str = "fail", timeout: float | None = None,
         pool: str | None = None, resources: Mapping[str, float] | None = None):
    """Mark *func* as a task, as ``@task`` or ``@task(after=[...], name=..., map=..., retries=...)``;
    returns it unchanged.

    ``map="files"`` runs the task once per element of the input ``files`` (its parameter of that
    name receives one element); a task taking a mapped task's result gets the list, in order,
    and a map over a mapped task goes element by element (no collect in between). ``retries=2``
    runs a task (each element of a map on its own) up to twice more when it raises; ``timeout=60``
    fails an attempt (of the task, or of one element) that runs longer than 60 seconds
    (:mod:`toppipe.pipeline.timeouts`). ``pool="bigmem"`` runs it on that worker pool, and
    ``resources={"GPU": 1}`` on a worker that offers that much (one of a pool that does).
    """
    if map is not None and not isinstance(map, str):
        raise PipelineError(f"map= takes the name of one input (a string), not {map!r}")
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise PipelineError(f"retries= takes a count (0 or more), not {retries!r}")
    if on_error not in ("fail", "continue"):
        raise PipelineError(f"on_error= is 'fail' or 'continue' (a failed element left out), not {on_error!r}")
    options = TaskOptions(name=name, after=_names(after), map=map, retries=retries, on_error=on_error,
                          timeout=_seconds(timeout), pool=_pool(pool), resources=_resources(resources))  # fmt: skip

    def mark(target: Callable) -> Callable:
        if not callable(target):
            raise PipelineError(f"@task marks functions, not {type(target).__name__} objects")
        target.__toppipe_task__ = options
        return target

    return mark if func is None else mark(func)


@dataclass(frozen=True)
class _Declared:
    func: Callable[..., Any]
    after: tuple[str, ...]
    parameters: tuple[tuple[str, Any], ...]
    map: str | None = None
    retries: int = 0
    on_error: str = "fail"
    timeout: float | None = None
    pool: str | None = None
    resources: tuple[tuple[str, float], ...] = ()


class Pipeline:
    """Named tasks and their edges; always valid (every change is checked)."""

    #: The session ``toppipe.Session.load`` bound this pipeline to (``run`` uses it).
    session = None
    #: The module it was imported from (``"mypkg.pipeline"``), None for a pipeline file.
    module: str | None = None

    def run(self, on: str = "hosts", *, only=None, downstream_of=None, params=None, force: bool = False, session=None):
        """Start a run on the site's workers (``hosts`` or ``slurm``) or here (``local``); returns a Run at once.

        ``only`` runs a task or a list of them (their inputs from the cache), ``downstream_of`` a task
        and everything after it. A pipeline loaded from a file is read again
        first when the file changed since, keeping tasks added in the notebook.
        """
        session = session or self.session
        if session is None:
            raise PipelineError(f"pipeline {self.name} is not bound to a site: load it with session.load(...) or pass session=")
        return session.run_pipeline(self.refreshed(), on=on, only=only, downstream_of=downstream_of, params=params, force=force)

    def refreshed(self) -> Pipeline:
        """This pipeline, re-read from its file if the file changed since it was loaded (imported
        again if it came from a module and a file of its package changed)."""
        from toppipe.pipeline.loader import load, load_module

        if self.module is not None:
            from toppipe.pipeline.modules import changed

            if not changed(self.module.partition(".")[0]):
                return self
            fresh = load_module(self.module)
        elif self.source is None or not Path(self.source).is_file():
            return self
        elif Path(self.source).stat().st_mtime_ns == self._loaded_mtime:
            return self
        else:
            fresh = load(self.source)
        for name, task in self.tasks.items():
            if name not in fresh.tasks and not _from_file(task, self.source):
                fresh.add(task.func, after=task.after, name=name)
        fresh.session, fresh.module = self.session, self.module
        self._tasks, self._order, self._declared = fresh._tasks, fresh._order, fresh._declared
        self._added = fresh._added
        self._loaded_mtime = fresh._loaded_mtime
        return self

    @classmethod
    def skeleton(cls, name: str, graph: Mapping[str, Mapping[str, Iterable[str]]]) -> Pipeline:
        """A pipeline with the shape of *graph* (task -> {"inputs", "after"}, as a run's provenance
        keeps it) and no code: enough to draw a recorded run."""
        import inspect

        tasks = []
        for task_name, edges in graph.items():
            def stub(**_):  # never called
                return None

            inputs = [inspect.Parameter(i, inspect.Parameter.KEYWORD_ONLY) for i in edges.get("inputs", ())]
            stub.__signature__ = inspect.Signature(inputs)
            stub.__name__ = task_name
            tasks.append(Task(task_name, stub, after=tuple(edges.get("after", ()))))
        return cls(name, tasks)

    def __init__(self, name: str, tasks: Iterable[Callable | Task] = (), *, source: Path | None = None):
        if not isinstance(name, str) or not name.strip():
            raise PipelineError(f"a pipeline needs a non-empty name, not {name!r}")
        self.name = name
        self.source = source
        self._loaded_mtime = Path(source).stat().st_mtime_ns if source is not None and Path(source).is_file() else None
        declared: dict[str, _Declared] = {}
        for item in tasks:
            task_name, entry = self._declare(item, (), None)
            if task_name in declared:
                raise PipelineError(
                    f"pipeline {name!r}: two tasks are named {task_name!r}; rename one with @task(name=...)"
                )
            declared[task_name] = entry
        self._tasks, self._order = self._resolve(declared)
        self._declared = declared
        self._added: set[str] = set()  # tasks added after the pipeline was made (notebook cells)

    @property
    def tasks(self) -> dict[str, Task]:
        """Name -> :class:`Task`, in the order the tasks were added."""
        return dict(self._tasks)

    def add(self, func_or_task: Callable | Task, *, after: str | Iterable[str] = (), name: str | None = None,
            replace: bool = False) -> Task:
        """Add a task (``after`` adds to any ``@task(after=...)``); a replaced task keeps its place.

        A task added here before is replaced (a notebook cell run again); one the pipeline was
        made with (its file's) is replaced only with ``replace=True``.
        """
        task_name, entry = self._declare(func_or_task, _names(after), name)
        if task_name in self._declared and task_name not in self._added and not replace:
            where = f" in {self.source}" if self.source else ""
            raise PipelineError(
                f"pipeline {self.name!r} already has a task {task_name!r}{where}; rename yours with"
                " @task(name=...) or pass replace=True to replace it"
            )
        declared = {**self._declared, task_name: entry}
        self._tasks, self._order = self._resolve(declared)  # raises before anything changes
        self._declared = declared
        self._added.add(task_name)
        return self._tasks[task_name]

    def task(self, func: Callable | None = None, /, *, after: str | Iterable[str] = (), name: str | None = None,
             map: str | None = None, retries: int = 0, on_error: str = "fail", timeout: float | None = None,
             pool: str | None = None, resources: Mapping[str, float] | None = None, replace: bool = False):  # fmt: skip
        """``@pipeline.task`` or ``@pipeline.task(...)``: mark *func* and add it here."""

        def add(target: Callable) -> Callable:
            self.add(task(target, after=after, name=name, map=map, retries=retries, on_error=on_error, timeout=timeout,
                          pool=pool, resources=resources), replace=replace)  # fmt: skip
            return target

        return add if func is None else add(func)

    def validate(self) -> None:
        """Resolve inputs against the current tasks; raise on an unknown ``after`` or a cycle."""
        self._tasks, self._order = self._resolve(self._declared)

    def order(self) -> list[str]:
        """Task names, each after everything it waits for; ties keep insertion order."""
        return list(self._order)

    def upstream(self, name: str) -> set[str]:
        """Every task *name* waits for, directly or not."""
        self._known(name)
        return ordering.reach(name, lambda n: self._tasks[n].upstream)

    def downstream(self, name: str) -> set[str]:
        """Every task that waits for *name*, directly or not."""
        self._known(name)
        return ordering.reach(name, lambda n: [t.name for t in self._tasks.values() if n in t.upstream])

    def select(self, only: str | Iterable[str] | None = None, downstream_of: str | None = None) -> list[str]:
        """The tasks to run, in order: all, ``only`` those (a name or a list), or ``downstream_of``
        a task and its dependents."""
        if only is not None and downstream_of is not None:
            raise PipelineError(f"pipeline {self.name!r}: pass only= or downstream_of=, not both")
        if only is not None:
            chosen = _task_names(only, "only")
            for name in chosen:
                self._known(name)
            return [name for name in self._order if name in chosen]
        if downstream_of is not None:
            chosen = self.downstream(downstream_of) | {downstream_of}
            return [name for name in self._order if name in chosen]
        return self.order()

    def text(self) -> str:
        """One line per task, in order, with what it takes, waits for and its params."""
        from toppipe.pipeline import render

        return render.text(self)

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, tasks={self._order!r})"

    def __len__(self) -> int:
        return len(self._tasks)

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def _repr_svg_(self) -> str:
        from toppipe.pipeline import render

        return render.svg(self)

    def _declare(self, item: Callable | Task, after: tuple[str, ...], name: str | None) -> tuple[str, _Declared]:
        if isinstance(item, Task):
            func, options = item.func, TaskOptions(item.name, item.after, item.map, item.retries, item.on_error,
                                                   _seconds(item.timeout), item.pool, item.resources)  # fmt: skip
        elif callable(item):
            func, options = item, getattr(item, "__toppipe_task__", None) or TaskOptions()
        else:
            raise PipelineError(f"pipeline {self.name!r}: a task is a function, not {type(item).__name__}")
        task_name = name or options.name or getattr(func, "__name__", "")
        if not isinstance(task_name, str) or not task_name.isidentifier():
            raise PipelineError(
                f"pipeline {self.name!r}: task name {task_name!r} is not a Python identifier; pass name=..."
            )
        waits = tuple(dict.fromkeys(options.after + after))
        return task_name, _Declared(func, waits, _parameters(func, self.name, task_name), options.map, options.retries,
                                    options.on_error, options.timeout, options.pool, options.resources)  # fmt: skip

    def _resolve(self, declared: dict[str, _Declared]) -> tuple[dict[str, Task], list[str]]:
        """Tasks with inputs resolved against *declared*, and their order; raises if the graph is bad."""
        tasks = {}
        for name, entry in declared.items():
            inputs = tuple(p for p, _ in entry.parameters if p in declared and p != name)
            params = {p: default for p, default in entry.parameters if p not in inputs}
            tasks[name] = Task(name, entry.func, inputs, entry.after, MappingProxyType(params), entry.map, entry.retries,
                               entry.on_error, entry.timeout, entry.pool, entry.resources)  # fmt: skip
        for found in tasks.values():
            if found.map is not None and found.map not in found.inputs:
                raise PipelineError(
                    f"pipeline {self.name!r}: task {found.name!r} maps over {found.map!r}, which is not one of its"
                    f" inputs ({', '.join(found.inputs) or 'none'}); name a task it takes as a parameter"
                )
            for other in found.inputs:
                if found.map is not None and other != found.map and declared[other].map is not None:
                    raise PipelineError(
                        f"pipeline {self.name!r}: task {found.name!r} takes the mapped task {other!r} beside its"
                        f" map over {found.map!r}; map over {other!r} instead, or collect it in a task first"
                    )
        for found in tasks.values():
            for waited in found.after:
                if waited == found.name:
                    raise PipelineError(f"pipeline {self.name!r}: task {waited!r} cannot run after itself")
                if waited not in tasks:
                    raise PipelineError(
                        f"pipeline {self.name!r}: task {found.name!r} runs after {waited!r}, which is not a task;"
                        f" add {waited!r} first or drop it from after="
                    )
        upstream = {name: found.upstream for name, found in tasks.items()}
        order = ordering.topological(upstream)
        if len(order) < len(tasks):
            loop = ordering.cycle(upstream, [name for name in tasks if name not in order])
            raise PipelineError(
                f"pipeline {self.name!r} has a cycle: {' -> '.join(loop)}; remove one of these edges"
                " (a parameter named like a task is an input)"
            )
        return tasks, order

    def _known(self, name: str) -> None:
        if name not in self._tasks:
            known = ", ".join(self._order) or "none"
            raise PipelineError(f"pipeline {self.name!r} has no task {name!r}; its tasks: {known}")


def _names(value: str | Iterable[str]) -> tuple[str, ...]:
    names = (value,) if isinstance(value, str) else tuple(value)
    if not all(isinstance(name, str) for name in names):
        raise PipelineError(f"after= takes task names (strings), not {value!r}")
    return names


def _pool(pool) -> str | None:
    if pool is not None and (not isinstance(pool, str) or not pool):
        raise PipelineError(f"pool= takes the name of one of the site's pools (session.pools()), not {pool!r}")
    return pool


def _resources(resources) -> tuple[tuple[str, float], ...]:
    """``resources=`` as sorted pairs; a PipelineError unless names map to amounts above 0."""
    if resources is None:
        return ()
    if not isinstance(resources, Mapping) or not all(
        isinstance(k, str) and k and not isinstance(v, bool) and isinstance(v, (int, float)) and v > 0 for k, v in resources.items()
    ):
        raise PipelineError(f"resources= maps resource names to amounts above 0, e.g. {{'GPU': 1}}, not {resources!r}")
    return tuple(sorted((k, float(v)) for k, v in resources.items()))


def _seconds(timeout) -> float | None:
    """``timeout=`` as seconds (None: no timeout); a PipelineError unless it is a number above 0."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0:
        raise PipelineError(f"timeout= takes seconds (a number above 0), not {timeout!r}")
    return float(timeout)


def _task_names(value, option: str) -> set[str]:
    """The task names *value* gives (one name or several): a PipelineError for anything else."""
    names = [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple, set, frozenset)) else None
    if not names or not all(isinstance(name, str) for name in names):
        raise PipelineError(f"{option}= takes a task name or a list of them, not {value!r}")
    return set(names)


def _parameters(func: Callable, pipeline: str, name: str) -> tuple[tuple[str, Any], ...]:
    """``(name, default or REQUIRED)`` per parameter; only named parameters are allowed."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError) as error:
        raise PipelineError(f"pipeline {pipeline!r}: cannot read the parameters of task {name!r}: {error}") from None
    allowed = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    for parameter in signature.parameters.values():
        if parameter.kind not in allowed:
            raise PipelineError(
                f"pipeline {pipeline!r}: task {name!r} has parameter {parameter}; tasks are called with"
                " keyword arguments, so use named parameters only"
            )
    return tuple(
        (p.name, REQUIRED if p.default is inspect.Parameter.empty else p.default)
        for p in signature.parameters.values()
    )
