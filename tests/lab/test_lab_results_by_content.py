"""On the lab, a result is computed with exactly the code and data the user saved on the
desktop (synced by lsyncd to the shared folder), or not at all, and the cache never serves a
result of other code or data."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

EDITS = 50


def _states(run) -> dict[str, tuple[str, str]]:
    return {r["name"]: (r["state"], r["cache_key"]) for r in run.records()}


def _settled_records(run, want: set[str]) -> dict[str, tuple[str, str]]:
    """The records once the agent wrote every task's last state (it writes in batches)."""
    import time

    deadline = time.monotonic() + 10
    while True:
        found = _states(run)
        if (found and {state for state, _ in found.values()} <= want) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def _warmer(csv: str, degrees: float) -> str:
    """*csv* with *degrees* added to every reading (not to missing ones or the loggers' -999)."""
    lines = csv.splitlines()
    for i, line in enumerate(lines[1:], start=1):
        *fields, reading = line.split(",")
        if reading and float(reading) != -999:
            lines[i] = ",".join([*fields, f"{float(reading) + degrees:.2f}"])
    return "\n".join(lines) + "\n"


def _sync_evidence(state_dir: Path) -> str:
    """The end of the desktop's lsyncd log and its status file: why an edit did not reach the hosts."""
    folder = state_dir / "lab" / "services" / "lsyncd"
    found = []
    for name in ("log", "status"):
        try:
            found.append(f"--- lsyncd {name} ---\n" + "\n".join((folder / name).read_text().splitlines()[-40:]))
        except OSError as error:
            found.append(f"--- lsyncd {name}: {error}")
    return "\n".join(found)


def test_every_run_right_after_a_same_size_save_uses_the_saved_code(session, state_dir, tmp_path):
    """EDITS edits that keep the module's size, each followed at once by a run: each run returns
    its own edit's value, and each cached result, read back from the cache, is that value."""
    from toppipe.pipeline import PipelineError, cache
    from toppipe.pipeline.execute import TaskFailed

    project = Path(session.record["project_local"])
    name = f"toppipe_probe_{secrets.token_hex(4)}"
    module = project / f"{name}.py"
    pipeline_file = tmp_path / "pipelines" / "probe.py"
    pipeline_file.parent.mkdir(parents=True)
    pipeline_file.write_text(f"from toppipe.pipeline import task\nimport {name}\n\n@task\ndef value():\n    return {name}.VALUE\n")
    session.wait_for_workers(2)
    try:
        module.write_text("VALUE = 100\n")
        pipeline = session.load(pipeline_file)
        results, runs = {}, {}
        for value in range(100, 100 + EDITS):
            module.write_text(f"VALUE = {value}\n")  # same size, within the same second as the last
            run = pipeline.run(on="hosts")
            try:
                results[value] = run.wait(timeout=120).result("value")
            except (PipelineError, TaskFailed) as error:  # the edit never reached a host: say why
                pytest.fail(f"edit {value}: {error}\n{_sync_evidence(state_dir)}")
            runs[value] = run
        wrong = {value: got for value, got in results.items() if got != value}
        assert not wrong, f"runs returned another edit's value (edit: returned): {wrong}"
        for value, run in list(runs.items())[:: EDITS // 5]:  # what the cache holds for each key is that edit's value
            state, key = _settled_records(run, {"done", "cached"})["value"]
            stored = session.client.submit(cache.load, session.record["results"], key, pure=False).result()
            assert stored == value, f"the cache entry of edit {value} ({state}) holds {stored}"
        module.write_text("VALUE = 107\n")  # back to an earlier edit: its result, from the cache
        again = pipeline.run(on="hosts")
        assert again.wait(timeout=120).result("value") == 107
        assert _settled_records(again, {"cached"})["value"][0] == "cached"
    finally:
        module.unlink(missing_ok=True)


def test_a_changed_station_file_recomputes_what_read_it_and_putting_it_back_is_cached(session):
    """The weather example: 40 °C added to every reading of one station, then put back."""
    project = Path(session.record["project_local"])
    station = project / "data" / "station-east.csv"
    original = station.read_text()
    session.wait_for_workers(2)
    pipeline = session.load("weather")
    before = pipeline.run(on="hosts").wait(timeout=300)
    first = before.result("summary")
    try:
        station.write_text(_warmer(original, 40))
        changed = pipeline.run(on="hosts").wait(timeout=300)
        summary = changed.result("summary")
        assert summary["warmest"] == "east" and summary["mean_c"] > first["mean_c"], (first, summary)
        states = {name: state for name, (state, _) in _settled_records(changed, {"done", "cached"}).items()}
        elements = {name: states.pop(name) for name in list(states) if name.startswith("clean[")}  # one per file
        assert states == {"chunks": "cached", "clean": "done", "aggregate": "done", "summary": "done"}, states
        assert elements == {"clean[0]": "done", "clean[1]": "cached", "clean[2]": "cached", "clean[3]": "cached"}, elements
    finally:
        station.write_text(original)
    back = pipeline.run(on="hosts").wait(timeout=300)
    assert back.result("summary") == first
    states = {name: state for name, (state, _) in _settled_records(back, {"cached"}).items()}
    assert set(states.values()) == {"cached"}, states
