"""scripts/bump: its pure parts, then the real script on a throwaway copy of the repository's
pin layout, resolving against a local package index of tiny wheels (no network)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deploy import UserError, bump, pins
from tests.unit.tiny_wheels import make_wheel, simple_index

REPO = Path(__file__).resolve().parents[2]

# -- pure parts ---------------------------------------------------------------------------


def test_diff_lists_each_changed_package_per_file():
    before = {"requirements.txt": {"a": "1.0", "b": "2.0", "gone": "1"}, "requirements/worker.txt": {"a": "1.0"}}
    after = {"requirements.txt": {"a": "1.1", "b": "2.0", "new": "3"}, "requirements/worker.txt": {"a": "1.1"}}
    assert [str(c) for c in pins.diff(before, after)] == ["a 1.0 -> 1.1", "gone 1 (removed)", "new (new) 3", "a 1.0 -> 1.1"]
    assert [c.file for c in pins.diff(before, after)] == ["requirements.txt"] * 3 + ["requirements/worker.txt"]


def test_changed_images_keeps_the_build_order():
    before = {"base": "1", "compute": "2", "scheduler": "3", "client": "4"}
    after = {"base": "1", "compute": "9", "scheduler": "8", "client": "7"}
    assert pins.changed_images(before, after) == ["compute", "scheduler", "client"]


def test_failed_tests_are_read_from_pytest_summary_lines():
    assert pins.failed_test("FAILED tests/unit/test_x.py::test_y[a b] - AssertionError: no") == "tests/unit/test_x.py::test_y[a"
    assert pins.failed_test("ERROR tests/unit/test_x.py - ImportError") == "tests/unit/test_x.py"
    assert pins.failed_test("tests/unit/test_x.py::test_y FAILED") is None
    assert pins.failed_test("3 failed, 2 passed in 1.0s") is None


def test_exact_pins_of_a_short_list_are_read_and_moved():
    text = "-r worker.in\ndask==2026.8.0  # API we use\npsycopg[binary]==3.2.10\nbokeh\n"
    assert pins.listed(text) == {"dask": "2026.8.0", "psycopg": "3.2.10", "bokeh": None}
    assert pins.held(text) == {"dask": "2026.8.0", "psycopg": "3.2.10"}
    moved = pins.hold(text, "psycopg", "3.3.0")
    assert moved == text.replace("3.2.10", "3.3.0")
    assert pins.hold(moved, "bokeh", "9") == moved


def test_commit_message_names_the_packages_files_images_and_tests():
    changes = [pins.Change("requirements.txt", "a", "1.0", "1.1"), pins.Change("requirements/worker.txt", "a", "1.0", "1.1")]
    message = pins.commit_message(changes, ["Images rebuilt: compute", "Tests: scripts/test passed"])
    assert message.splitlines()[:5] == ["Bump a 1.0 -> 1.1", "", "requirements.txt: a 1.0 -> 1.1",
                                        "requirements/worker.txt: a 1.0 -> 1.1", "Images rebuilt: compute"]  # fmt: skip
    many = [pins.Change("requirements.txt", n, "1", "2") for n in "abcd"]
    assert pins.commit_message(many, []).startswith("Bump 4 pinned packages\n")


def test_commands_are_built_from_the_request():
    assert bump.compile_argv([], None) == ["scripts/compile-requirements", "--upgrade"]
    assert bump.compile_argv(["numpy", "dask==1"], "file:///x") == [
        "scripts/compile-requirements", "--upgrade-package", "numpy", "--upgrade-package", "dask==1", "--index-url", "file:///x"]  # fmt: skip
    assert bump.test_argv({}) == ["scripts/test"]
    assert bump.test_argv({"TOPPIPE_BUMP_TEST": "scripts/test -m 'not lab'"}) == ["scripts/test", "-m", "not lab"]


def test_requests_are_checked_against_the_pins():
    pinned, exact = {"numpy", "dask"}, {"dask": "requirements/in/worker.in"}
    assert bump.check_requests(["numpy", "NumPy==2.0", "dask==2026.9.0"], pinned, exact) == []
    assert bump.check_requests(["dask"], pinned, exact) == [
        "dask stays where requirements/in/worker.in pins it; scripts/bump dask==VERSION moves it"]  # fmt: skip
    with pytest.raises(UserError, match="no pinned package named 'nmupy'; did you mean 'numpy'"):
        bump.check_requests(["nmupy"], pinned, exact)
    with pytest.raises(UserError, match="NAME==VERSION"):
        bump.check_requests(["numpy>=2"], pinned, exact)


# -- scripts/bump on a throwaway repository --------------------------------------------------

#: The short lists of the throwaway repository: its client, as the real one, takes scheduler and worker.
SHORT_LISTS = {"client": "-r scheduler.in\n-r worker.in\n", "scheduler": "otherpkg\n", "worker": "tinypkg\n", "test": "heldpkg==1.0\n"}
PACKAGES = ("tinypkg", "otherpkg", "heldpkg")


@pytest.fixture(scope="module")
def uv():
    """The pinned uv, installed by the same bootstrap as compile-requirements (PyPI the first time only)."""
    subprocess.run([REPO / "scripts" / "uv", "--version"], check=True, capture_output=True, timeout=600)


def git(root: Path, *args: str) -> str:
    argv = ["git", "-c", "user.name=toppipe tests", "-c", "user.email=tests@toppipe.invalid", *args]
    return subprocess.run(argv, cwd=root, check=True, capture_output=True, text=True).stdout


def run_bump(root: Path, *args: str, test_command: str = "true") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "PIP_"))}
    env["TOPPIPE_BUMP_TEST"] = test_command
    return subprocess.run([root / "scripts" / "bump", *args], cwd=root, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def checkout(tmp_path, uv):
    """A git repository with the real scripts, deploy package, definitions and versions, and short
    lists of tiny packages compiled at 1.0; returns it and the URL of an index that also has 1.1."""
    root = tmp_path / "repo"
    for folder in ("scripts", "deploy", "containers", "config"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "requirements" / "in").mkdir(parents=True)
    shutil.copy(REPO / "requirements" / "tools.txt", root / "requirements" / "tools.txt")
    for part, text in SHORT_LISTS.items():
        (root / "requirements" / "in" / f"{part}.in").write_text(text)
    for environment in (".venv", ".venv-tools"):
        (root / environment).symlink_to(REPO / environment)
    old = simple_index(tmp_path / "index-old", [make_wheel(tmp_path / "wheels", p, "1.0") for p in PACKAGES])
    subprocess.run([root / "scripts" / "compile-requirements", "--index-url", old], cwd=root, check=True, capture_output=True)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "pins at 1.0")
    wheels = [make_wheel(tmp_path / "wheels", p, v) for p in PACKAGES for v in ("1.0", "1.1")]
    return root, simple_index(tmp_path / "index-new", wheels)


def changed_files(root: Path) -> list[str]:
    return sorted(line[3:] for line in git(root, "status", "--porcelain").splitlines())


def test_bump_one_package_shows_the_diff_and_the_images_to_rebuild(checkout):
    root, index = checkout
    done = run_bump(root, "--no-build", "--index-url", index, "tinypkg")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "requirements.txt\n  tinypkg 1.0 -> 1.1\nrequirements/worker.txt\n  tinypkg 1.0 -> 1.1\n" in done.stdout
    assert "otherpkg" not in done.stdout
    assert "images to rebuild: compute, scheduler, client\n" in done.stdout
    assert changed_files(root) == ["requirements.txt", "requirements/worker.txt"]
    assert pins.read(root / "requirements.txt") == {"otherpkg": "1.0", "tinypkg": "1.1"}
    assert "\nBump tinypkg 1.0 -> 1.1\n\nrequirements.txt: tinypkg 1.0 -> 1.1\n" in done.stdout
    assert "Images to rebuild: compute, scheduler, client (not built: --no-build)\nTests: true passed\n" in done.stdout


def test_bump_without_names_moves_every_pin_a_short_list_leaves_free(checkout):
    root, index = checkout
    done = run_bump(root, "--no-build", "--no-test", "--index-url", index)
    assert done.returncode == 0, done.stdout + done.stderr
    assert pins.read(root / "requirements.txt") == {"otherpkg": "1.1", "tinypkg": "1.1"}
    assert pins.read(root / "requirements" / "test.txt") == {"heldpkg": "1.0"}
    assert "images to rebuild: compute, scheduler, client\n" in done.stdout
    assert "\nBump otherpkg 1.0 -> 1.1, tinypkg 1.0 -> 1.1\n" in done.stdout


def test_bump_of_an_exact_pin_moves_its_short_list(checkout):
    root, index = checkout
    held = run_bump(root, "--no-build", "--index-url", index, "heldpkg")
    assert held.returncode == 0 and "heldpkg stays where requirements/in/test.in pins it" in held.stdout
    assert "nothing to bump" in held.stdout and changed_files(root) == []
    moved = run_bump(root, "--no-build", "--index-url", index, "heldpkg==1.1")
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert "requirements/test.txt\n  heldpkg 1.0 -> 1.1\nimages to rebuild: none\n" in moved.stdout
    assert changed_files(root) == ["requirements/in/test.in", "requirements/test.txt"]


def test_a_failing_test_reverts_the_bump_and_is_named(checkout):
    root, index = checkout
    fails = f"{sys.executable} -c \"print('FAILED tests/unit/test_new.py::test_tinypkg - AssertionError'); raise SystemExit(1)\""
    done = run_bump(root, "--no-build", "--index-url", index, "tinypkg", test_command=fails)
    assert done.returncode == 1
    assert "tinypkg 1.0 -> 1.1" in done.stdout and "bump: reverted" in done.stdout
    assert "failing: tests/unit/test_new.py::test_tinypkg" in done.stderr
    assert changed_files(root) == []


def test_user_errors_are_one_line_and_change_nothing(checkout):
    root, index = checkout
    unknown = run_bump(root, "--index-url", index, "tinypk")
    assert (unknown.returncode, unknown.stderr) == (2, "error: no pinned package named 'tinypk'; did you mean 'tinypkg'?\n")
    (root / "requirements" / "worker.txt").write_text((root / "requirements" / "worker.txt").read_text() + "\n")
    dirty = run_bump(root, "--index-url", index, "tinypkg")
    assert dirty.returncode == 2 and dirty.stderr.startswith("error: uncommitted changes in requirements/worker.txt;")
    assert changed_files(root) == ["requirements/worker.txt"]
    assert "Traceback" not in unknown.stderr + dirty.stderr
