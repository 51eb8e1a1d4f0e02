"""The pipeline graph, its loader, its digests and its SVG: pure Python, no dask."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from toppipe.errors import ToppipeError
from toppipe.pipeline import REQUIRED, Pipeline, PipelineError, Task, load, task
from toppipe.pipeline.hashing import code_hash, value_hash
from toppipe.pipeline.loader import module_name_for
from toppipe.pipeline.render import PALETTE, svg

REPO = Path(__file__).resolve().parents[2]
SVG = "{http://www.w3.org/2000/svg}"


@task
def raw(path="data.csv"):
    return [3, 1, 2]


@task
def cleaned(raw, threshold=0.5):
    return sorted(raw)


@task(after=["raw"])
def audit(cleaned, *, strict):
    return len(cleaned)


@task(name="summary", after="audit")
def summarise(cleaned, raw):
    return cleaned[0]


def demo() -> Pipeline:
    return Pipeline("demo", [raw, cleaned, audit, summarise])


def write(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(body))
    return path


CLEAN = """
    from toppipe.pipeline import task

    def helper(values):
        return [v for v in values if v is not None]

    @task
    def raw(path="data.csv"):
        return [3, None, 1]

    @task(after=["raw"])
    def report(cleaned):
        return len(cleaned)

    @task
    def cleaned(raw, threshold=0.5):
        return helper(raw)
"""


# --- the graph -------------------------------------------------------------------------------


def test_a_parameter_named_like_a_task_is_an_input_and_the_rest_are_params():
    tasks = demo().tasks
    assert list(tasks) == ["raw", "cleaned", "audit", "summary"]
    assert tasks["cleaned"].inputs == ("raw",) and dict(tasks["cleaned"].params) == {"threshold": 0.5}
    assert tasks["raw"].inputs == () and dict(tasks["raw"].params) == {"path": "data.csv"}
    assert tasks["summary"].inputs == ("cleaned", "raw") and tasks["summary"].func is summarise


def test_after_orders_without_passing_a_result():
    tasks = demo().tasks
    assert tasks["audit"].after == ("raw",) and tasks["audit"].inputs == ("cleaned",)
    assert tasks["audit"].upstream == ("cleaned", "raw")
    assert tasks["summary"].after == ("audit",)
    assert demo().upstream("summary") == {"raw", "cleaned", "audit"}


def test_params_keep_their_defaults_and_a_missing_default_is_required():
    assert dict(demo().tasks["audit"].params) == {"strict": REQUIRED}
    assert repr(REQUIRED) == "REQUIRED" and pickle.loads(pickle.dumps(REQUIRED)) is REQUIRED


def test_the_decorator_leaves_the_function_callable():
    assert cleaned([2, 1]) == [1, 2] and summarise([5], None) == 5
    assert isinstance(demo().tasks["raw"], Task)


def test_order_is_topological_and_ties_keep_insertion_order():
    def a(): ...
    def b(): ...
    def c(a): ...
    def d(): ...

    assert Pipeline("p", [c, a, d, b]).order() == ["a", "c", "d", "b"]
    assert Pipeline("p", [d, b, a, c]).order() == ["d", "b", "a", "c"]
    assert demo().order() == ["raw", "cleaned", "audit", "summary"]
    assert Pipeline("copy", reversed(demo().tasks.values())).order() == demo().order()  # Task objects too


def test_a_cycle_is_named():
    def a(c): ...
    def b(a): ...
    def c(b): ...

    with pytest.raises(PipelineError, match=r"pipeline 'loop' has a cycle: a -> b -> c -> a;"):
        Pipeline("loop", [a, b, c])
    with pytest.raises(PipelineError, match=r"cycle: x -> y -> x"):
        Pipeline("loop", [task(lambda: 0, name="x", after="y"), task(lambda: 0, name="y", after="x")])


def test_an_unknown_after_is_reported_with_the_fix():
    def late(): ...

    with pytest.raises(PipelineError, match=r"pipeline 'p': task 'late' runs after 'nowhere', which is not a task"):
        Pipeline("p", [task(late, after=["nowhere"])])
    with pytest.raises(ToppipeError, match="cannot run after itself"):
        Pipeline("p", [task(late, after="late")])


def test_bad_tasks_are_refused_early():
    def spread(*values): ...
    def one(): ...

    with pytest.raises(PipelineError, match=r"task 'spread' has parameter \*values"):
        Pipeline("p", [spread])
    with pytest.raises(PipelineError, match=r"two tasks are named 'one'"):
        Pipeline("p", [one, one])
    with pytest.raises(PipelineError, match="not a Python identifier; pass name="):
        Pipeline("p", [lambda: 0])


def test_select_only_a_task_or_it_and_everything_downstream():
    pipeline = demo()
    assert pipeline.select() == ["raw", "cleaned", "audit", "summary"]
    assert pipeline.select(only="cleaned") == ["cleaned"]
    assert pipeline.select(downstream_of="cleaned") == ["cleaned", "audit", "summary"]
    assert pipeline.select(downstream_of="audit") == ["audit", "summary"]
    assert pipeline.downstream("raw") == {"cleaned", "audit", "summary"}
    with pytest.raises(PipelineError, match=r"pipeline 'demo' has no task 'nope'; its tasks: raw, cleaned"):
        pipeline.select(only="nope")
    with pytest.raises(PipelineError, match="not both"):
        pipeline.select(only="raw", downstream_of="raw")
    assert pipeline.select(only=["summary", "cleaned"]) == ["cleaned", "summary"]
    with pytest.raises(PipelineError, match=r"has no task 'nope'"):
        pipeline.select(only=["cleaned", "nope"])
    with pytest.raises(PipelineError, match=r"only= takes a task name or a list of them, not 3"):
        pipeline.select(only=3)


def test_a_task_added_from_a_notebook_joins_the_graph():
    pipeline = demo()

    def plot(summary, dpi=100):
        return summary

    added = pipeline.add(plot)
    assert added.inputs == ("summary",) and dict(added.params) == {"dpi": 100}
    assert pipeline.order()[-1] == "plot" and pipeline.select(downstream_of="audit") == ["audit", "summary", "plot"]

    def plot(cleaned):  # noqa: F811 - the cell is edited and run again
        return cleaned

    pipeline.add(plot)  # the notebook's own task: replaced
    assert pipeline.tasks["plot"].inputs == ("cleaned",) and list(pipeline.tasks)[-1] == "plot"

    def raw():  # clashes with a task the pipeline was made with
        return []

    with pytest.raises(PipelineError, match=r"pipeline 'demo' already has a task 'raw'; rename yours .* replace=True"):
        pipeline.add(raw)
    assert pipeline.tasks["raw"].func is not raw
    pipeline.add(raw, replace=True)
    assert pipeline.tasks["raw"].func is raw


def test_a_failed_add_leaves_the_pipeline_as_it_was():
    pipeline = demo()

    def raw(summary):  # would make a cycle
        return summary

    with pytest.raises(PipelineError, match="cycle: raw -> cleaned -> summary -> raw"):
        pipeline.add(raw, replace=True)
    assert pipeline.tasks["raw"].func is not raw and pipeline.order() == demo().order()


def test_inputs_are_resolved_against_the_tasks_present_now():
    pipeline = Pipeline("p")

    @pipeline.task
    def report(scale=2):
        return scale

    assert dict(pipeline.tasks["report"].params) == {"scale": 2}

    @pipeline.task(after=[])
    def scale():
        return 3

    assert pipeline.tasks["report"].inputs == ("scale",) and pipeline.order() == ["scale", "report"]
    assert report() == 2  # still the plain function


def test_text_lists_tasks_in_order_with_their_edges():
    lines = demo().text().splitlines()
    assert lines[0] == "pipeline 'demo': 4 tasks"
    assert [line.split()[0] for line in lines[1:]] == ["raw", "cleaned", "audit", "summary"]
    assert "<- cleaned; after raw; params strict" in lines[3]
    assert "<- cleaned, raw; after audit" in lines[4]
    assert repr(demo()) == "Pipeline('demo', tasks=['raw', 'cleaned', 'audit', 'summary'])"


# --- the SVG ---------------------------------------------------------------------------------


def test_svg_is_well_formed_with_every_task_and_one_edge_per_dependency():
    pipeline = demo()
    root = ElementTree.fromstring(pipeline._repr_svg_())
    assert root.tag == f"{SVG}svg" and float(root.get("width")) > 0 and float(root.get("height")) > 0
    names = [g.get("data-task") for g in root.iter(f"{SVG}g") if g.get("class") == "task"]
    assert names == pipeline.order()
    assert {t.text for t in root.iter(f"{SVG}text")} == set(pipeline.tasks)
    edges = [g for g in root.iter(f"{SVG}g") if g.get("class", "").startswith("edge")]
    expected = {(u, t.name) for t in pipeline.tasks.values() for u in t.upstream}
    assert len(edges) == len(expected) == 6
    assert {(g.get("data-from"), g.get("data-to")) for g in edges} == expected
    dashed = {(g.get("data-from"), g.get("data-to")) for g in edges if g.get("class") == "edge after"}
    assert dashed == {("raw", "audit"), ("audit", "summary")}
    for g in edges:
        assert (g.find(f"{SVG}path").get("stroke-dasharray") is not None) == (g.get("class") == "edge after")


def test_svg_escapes_names_and_colours_by_state():
    pipeline = Pipeline("a <b> & 'c'", [raw, cleaned])
    image = svg(pipeline, states={"raw": "done", "cleaned": "failed"})
    root = ElementTree.fromstring(image)
    assert root.get("aria-label") == "pipeline a <b> & 'c'"
    boxes = [g for g in root.iter(f"{SVG}g") if g.get("class") == "task"]
    fills = {g.get("data-task"): g.find(f"{SVG}rect").get("fill") for g in boxes}
    assert fills == {"raw": PALETTE["done"][0], "cleaned": PALETTE["failed"][0]}
    with pytest.raises(PipelineError, match="unknown state 'finished'"):
        svg(pipeline, states={"raw": "finished"})
    ElementTree.fromstring(svg(Pipeline("empty")))


# --- loading ---------------------------------------------------------------------------------


def test_load_by_name_from_the_project_and_by_path(tmp_path, monkeypatch):
    path = write(tmp_path, "pipelines/clean.py", CLEAN)
    pipeline = load("clean", project=tmp_path)
    assert pipeline.name == "clean" and pipeline.source == path
    assert list(pipeline.tasks) == ["raw", "report", "cleaned"]  # source order
    assert pipeline.order() == ["raw", "cleaned", "report"]
    assert pipeline.tasks["cleaned"].func([1, None]) == [1]
    assert list(load(path).tasks) == list(load("pipelines/clean.py", project=tmp_path).tasks)
    monkeypatch.chdir(tmp_path)
    assert load("clean").order() == load(Path("pipelines") / "clean.py").order()


def test_each_load_is_fresh(tmp_path):
    path = write(tmp_path, "pipelines/clean.py", CLEAN)
    first = load("clean", project=tmp_path)
    path.write_text(path.read_text().replace("return [3, None, 1]", "return [4, None, 5, 6]"))
    second = load("clean", project=tmp_path)
    assert first.tasks["raw"].func() == [3, None, 1] and second.tasks["raw"].func() == [4, None, 5, 6]
    assert first.tasks["raw"].func.__module__ == second.tasks["raw"].func.__module__ == module_name_for(path)
    assert sys.modules[module_name_for(path)].raw is second.tasks["raw"].func
    assert not (path.parent / "__pycache__").exists()


def test_pipeline_name_comes_from_the_module(tmp_path):
    write(tmp_path, "pipelines/v2.py", 'PIPELINE_NAME = "cleaning"\n' + textwrap.dedent(CLEAN))
    assert load("v2", project=tmp_path).name == "cleaning"


def test_a_missing_file_says_what_was_looked_for(tmp_path):
    write(tmp_path, "pipelines/clean.py", CLEAN)
    expected = rf"no pipeline 'cleen': looked for {tmp_path}/pipelines/cleen.py \(pipelines there: clean\)"
    with pytest.raises(PipelineError, match=expected):
        load("cleen", project=tmp_path)
    with pytest.raises(PipelineError, match=rf"no pipeline file {tmp_path}/other.py"):
        load("other.py", project=tmp_path)
    with pytest.raises(PipelineError, match="there is no pipeline in"):
        load("clean", project=tmp_path / "elsewhere")


def test_a_module_that_raises_gives_one_line_naming_the_file(tmp_path):
    path = write(tmp_path, "pipelines/broken.py", "import os\n\nraise RuntimeError('no data folder\\nsecond line')\n")
    with pytest.raises(PipelineError) as caught:
        load("broken", project=tmp_path)
    message = str(caught.value)
    assert message == f"{path} failed to load: line 3: RuntimeError: no data folder; fix it and load again"
    assert module_name_for(path) not in sys.modules
    write(tmp_path, "pipelines/typo.py", "def f(:\n    pass\n")
    with pytest.raises(PipelineError, match=r"typo.py failed to load: line 1: SyntaxError"):
        load("typo", project=tmp_path)


def test_a_bad_graph_in_a_file_names_the_file(tmp_path):
    loop = "from toppipe.pipeline import task\n@task\ndef a(b): ...\n@task\ndef b(a): ...\n"
    write(tmp_path, "pipelines/loop.py", loop)
    with pytest.raises(PipelineError, match=r"loop.py: pipeline 'loop' has a cycle: a -> b -> a"):
        load("loop", project=tmp_path)


def test_module_names_are_identifiers_unique_per_file(tmp_path):
    one, two = tmp_path / "a" / "my-clean.py", tmp_path / "b" / "my-clean.py"
    assert module_name_for(one).startswith("toppipe_pipeline_my_clean_") and module_name_for(one).isidentifier()
    assert module_name_for(one) != module_name_for(two) and module_name_for(one) == module_name_for(one)


def test_loaded_functions_pickle_by_value_for_workers_that_cannot_import_them(tmp_path):
    cloudpickle = pytest.importorskip("cloudpickle")
    write(tmp_path, "pipelines/clean.py", CLEAN)
    payload = cloudpickle.dumps(load("clean", project=tmp_path).tasks["cleaned"].func)
    worker = "import sys, cloudpickle; f = cloudpickle.loads(sys.stdin.buffer.read()); print(f([1, None, 2]))"
    done = subprocess.run([sys.executable, "-c", worker], input=payload, capture_output=True, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().strip() == "[1, 2]"


# --- digests ---------------------------------------------------------------------------------


def hashes(tmp_path: Path) -> dict[str, str]:
    return {name: code_hash(t.func) for name, t in load("clean", project=tmp_path).tasks.items()}


def test_code_hash_follows_a_function_body_and_nothing_else(tmp_path):
    path = write(tmp_path, "pipelines/clean.py", CLEAN)
    first = hashes(tmp_path)
    assert all(len(h) == 16 and int(h, 16) >= 0 for h in first.values()) and len(set(first.values())) == 3
    assert hashes(tmp_path) == first  # a fresh load of the same file
    path.write_text(path.read_text().replace("return len(cleaned)", "return len(cleaned) + 0"))
    second = hashes(tmp_path)
    assert second["report"] != first["report"] and second["raw"] == first["raw"]
    assert second["cleaned"] == first["cleaned"]  # report sits above it and changed
    path.write_text(path.read_text().replace("if v is not None]", "if v]\n\n# more\n\n"))
    third = hashes(tmp_path)
    assert third == second  # helper is not a task's own code


def test_code_hash_is_the_same_in_another_process(tmp_path):
    write(tmp_path, "pipelines/clean.py", CLEAN)
    script = (
        "import sys; from toppipe.pipeline import load; from toppipe.pipeline.hashing import code_hash;"
        "print(sorted((n, code_hash(t.func)) for n, t in load('clean', project=sys.argv[1]).tasks.items()))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(sorted(hashes(tmp_path).items()))


def test_code_hash_without_source_digests_the_code_object():
    def made(body: str):
        namespace: dict = {}
        exec(compile(f"def f(x):\n    def inner(y):\n        return y in {{'a', 'b', 'c'}}\n    {body}\n",
                     "<cell>", "exec"), namespace)
        return namespace["f"]

    assert code_hash(made("return inner(x)")) == code_hash(made("return inner(x)"))
    assert code_hash(made("return inner(x)")) != code_hash(made("return not inner(x)"))
    with pytest.raises(PipelineError, match="not a Python function"):
        code_hash(len)


def test_code_hash_describes_the_code_that_was_loaded(tmp_path):
    path = write(tmp_path, "pipelines/clean.py", CLEAN)
    pipeline = load("clean", project=tmp_path)
    before = code_hash(pipeline.tasks["raw"].func)
    path.write_text(path.read_text().replace("[3, None, 1]", "[9, None, 9]"))
    assert code_hash(pipeline.tasks["raw"].func) == before
    assert code_hash(load("clean", project=tmp_path).tasks["raw"].func) != before


def test_value_hash_is_canonical_for_plain_data_and_pickles_the_rest():
    assert value_hash({"a": 1, "b": [1, 2]}) == value_hash({"b": [1, 2], "a": 1})
    assert value_hash((1, 2)) == value_hash([1, 2])
    assert len({value_hash(v) for v in (1, 1.0, True, "1", None, [1])}) == 6
    assert value_hash(Path("/x")) == value_hash(Path("/x")) != value_hash(Path("/y"))
    assert value_hash({1: "a"}) != value_hash({"1": "a"})
    with pytest.raises(PipelineError, match="cannot hash a parameter value of type function"):
        value_hash(lambda: 0)


def test_a_cell_run_again_replaces_its_task_and_a_clash_with_the_file_names_it(tmp_path):
    path = tmp_path / "clean.py"
    path.write_text("from toppipe.pipeline import task\n\n@task\ndef raw():\n    return [1]\n")
    pipeline = load(path)

    def plot(raw):
        return raw

    pipeline.add(plot)
    pipeline.add(plot)  # the cell, run again
    assert pipeline.order() == ["raw", "plot"]

    def raw():
        return [2]

    with pytest.raises(PipelineError, match=rf"already has a task 'raw' in {path}; rename yours"):
        pipeline.add(raw)
