"""Pipelines: ``@task`` functions whose parameters name the tasks they take results from.

    from toppipe.pipeline import task, load

    @task
    def raw(path="data.csv"): ...

    @task
    def cleaned(raw, threshold=0.5): ...   # takes raw's result; threshold is a param

    pipeline = session.load("clean")       # <project>/pipelines/clean.py, bound to a site
    pipeline.order()                       # ['raw', 'cleaned']
    run = pipeline.run(on="slurm")         # returns at once; run.progress(), run.wait(), run.result("cleaned")

The graph (graph, loader, hashing, render) is pure Python; ``runs`` and
``execute`` run it on a site's workers, ``progress`` shows a run, ``elements``
fetches a mapped task's results lazily (:class:`MapResults`).
"""

from toppipe.pipeline.elements import MapResults
from toppipe.pipeline.execute import TaskFailed, project_path
from toppipe.pipeline.graph import REQUIRED, Pipeline, PipelineError, Task, task
from toppipe.pipeline.loader import load

__all__ = ["REQUIRED", "MapResults", "Pipeline", "PipelineError", "Task", "TaskFailed", "load", "project_path", "task"]
