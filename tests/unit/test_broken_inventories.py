"""Every broken inventory fails the same clean way.

Each folder under ``tests/data/broken_inventories/`` is a small inventory that
is wrong in one way, plus ``expected.txt``: a substring the one-line error
must contain (the file, the key and the fix). For each case ``plan`` and
``up`` must exit 2 with exactly one ``error: ...`` line on stderr, nothing on
stdout, no traceback, and nothing written to the state folder.

Add a case by adding a folder; it is picked up automatically.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.inventory import InventoryError, load_site

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "data" / "broken_inventories"
CASES = sorted(p for p in CORPUS.iterdir() if p.is_dir()) if CORPUS.is_dir() else []
COMMANDS = ("plan", "up")

#: Cases also run end to end as ``python -m deploy`` (the rest run in-process).
SUBPROCESS_CASES = (
    "hosts-as-list",
    "not-utf8",
    "unhashable-key",
    "yaml-syntax-error",
    "ports-unknown-key",
    "client-not-local-in-host-vars",
    "settings-in-empty-group-vars",
    "multiline-runtime",
    "missing-key-file",
    "relative-key-file",
    "walltime-unquoted",
)


def _expected(case: Path) -> str:
    file = case / "expected.txt"
    assert file.is_file(), f"{case.name}: no expected.txt; add one with a substring of the expected error"
    text = file.read_text().rstrip("\n")
    assert text.strip(), f"{case.name}: expected.txt is empty"
    assert "\n" not in text, f"{case.name}: expected.txt must hold a single line"
    return text


def _must_not_load(case: Path) -> None:
    """Guard: never run plan/up on a case that (no longer) fails to load."""
    try:
        load_site(case)
    except InventoryError:
        return
    pytest.fail(f"{case.name}: inventory loads without error; it is not broken (not running plan/up on it)")


def _assert_clean_failure(name: str, code: int, out: str, err: str, expected: str) -> None:
    assert "Traceback" not in out + err, f"{name}: traceback in output:\n{out}{err}"
    assert code == 2, f"{name}: exit code {code}, want 2; stderr: {err!r}"
    assert out == "", f"{name}: stdout not empty: {out!r}"
    assert err.endswith("\n") and err.count("\n") == 1, f"{name}: stderr is not exactly one line: {err!r}"
    assert err.startswith("error: "), f"{name}: stderr does not start with 'error: ': {err!r}"
    assert expected in err, f"{name}: {expected!r} not in {err!r}"


def _assert_nothing_written(*folders: Path) -> None:
    for folder in folders:
        assert not folder.exists() or not any(folder.iterdir()), f"something was written to {folder}: {sorted(folder.rglob('*'))}"


@pytest.fixture
def isolated_state(tmp_path, monkeypatch) -> tuple[Path, Path]:
    state, xdg = tmp_path / "state", tmp_path / "xdg"
    monkeypatch.setenv("TOPPIPE_STATE_DIR", str(state))
    monkeypatch.setenv("XDG_STATE_HOME", str(xdg))
    return state, xdg


@pytest.fixture
def deploy_main(monkeypatch):
    # deploy.__main__ re-execs itself at import when TOPPIPE_SERVICE is set.
    monkeypatch.delenv("TOPPIPE_SERVICE", raising=False)
    return importlib.import_module("deploy.__main__").main


def test_corpus_is_there():
    assert len(CASES) >= 20, f"want at least 20 broken inventories in {CORPUS}, found {len(CASES)}"
    names = {case.name for case in CASES}
    missing = set(SUBPROCESS_CASES) - names
    assert not missing, f"SUBPROCESS_CASES names cases that do not exist: {sorted(missing)}"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("command", COMMANDS)
def test_fails_cleanly(case, command, deploy_main, isolated_state, capsys):
    expected = _expected(case)
    _must_not_load(case)
    capsys.readouterr()
    code = deploy_main([command, str(case)])
    captured = capsys.readouterr()
    _assert_clean_failure(case.name, code, captured.out, captured.err, expected)
    _assert_nothing_written(*isolated_state)


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
@pytest.mark.parametrize("command", COMMANDS)
def test_fails_cleanly_end_to_end(name, command, tmp_path):
    case = CORPUS / name
    expected = _expected(case)
    _must_not_load(case)
    state, xdg = tmp_path / "state", tmp_path / "xdg"
    env = {k: v for k, v in os.environ.items() if k != "TOPPIPE_SERVICE"}
    env.update(TOPPIPE_STATE_DIR=str(state), XDG_STATE_HOME=str(xdg), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(
        [sys.executable, "-m", "deploy", command, str(case.relative_to(ROOT))],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    _assert_clean_failure(name, proc.returncode, proc.stdout, proc.stderr, expected)
    _assert_nothing_written(state, xdg)


@pytest.mark.parametrize(
    ("name", "file", "key"),
    [
        ("ports-unknown-key", "group_vars/all.yml", "toppipe.ports.schedulr"),
        ("missing-group-vars-all", "hosts.yml", "toppipe"),
        ("unknown-host-in-group", "hosts.yml", "all.children.workers.hosts.nod1"),
        ("yaml-syntax-error", "hosts.yml", ""),
        ("typo-host-var", "hosts.yml", "all.hosts.node1.ansible_hots"),
        ("typo-host-var-in-group-inline-vars", "hosts.yml", "all.children.workers.vars.ansible_usr"),
        ("typo-host-var-in-host-vars", "host_vars/node1.yml", "ansible_uesr"),
        ("host-vars-undeclared-host", "host_vars/noed1.yml", "noed1"),
        ("settings-in-group-vars", "group_vars/workers.yml", "toppipe"),
        ("negative-host-workers", "group_vars/workers.yml", "toppipe_workers"),
        ("client-not-local-in-host-vars", "host_vars/localhost.yml", "ansible_connection"),
        ("not-utf8", "group_vars/all.yml", ""),
    ],
)
def test_error_names_the_file_and_key(name, file, key):
    case = CORPUS / name
    with pytest.raises(InventoryError) as info:
        load_site(case)
    assert info.value.file.resolve() == (case / file).resolve(), str(info.value)
    assert info.value.key == key, str(info.value)
    assert file in str(info.value)
