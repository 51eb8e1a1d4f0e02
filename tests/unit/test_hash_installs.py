"""An install with --require-hashes, as scripts/setup and the images do it, refuses a file whose hash is not pinned."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.unit.tiny_wheels import make_wheel, sha256


def pip_install(requirements, wheels, target):
    """pip install --require-hashes of *requirements* from the folder *wheels* only, into *target*."""
    argv = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--require-hashes", "--no-deps",
            "--no-index", "--find-links", str(wheels), "--target", str(target), "-r", str(requirements)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture
def wheel(tmp_path):
    return make_wheel(tmp_path / "wheels", "tinypkg", "1.0")


def requirements(tmp_path, digest):
    path = tmp_path / "requirements.txt"
    path.write_text(f"tinypkg==1.0 \\\n    --hash=sha256:{digest}\n")
    return path


def test_the_pinned_hash_installs(tmp_path, wheel):
    done = pip_install(requirements(tmp_path, sha256(wheel)), wheel.parent, tmp_path / "target")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "target" / "tinypkg" / "__init__.py").read_text() == '__version__ = "1.0"\n'


def test_a_tampered_hash_fails_the_install(tmp_path, wheel):
    wrong = sha256(wheel)[:-1] + ("0" if sha256(wheel)[-1] != "0" else "1")
    done = pip_install(requirements(tmp_path, wrong), wheel.parent, tmp_path / "target")
    assert done.returncode != 0
    assert "DO NOT MATCH THE HASHES" in done.stderr
    assert not (tmp_path / "target" / "tinypkg").exists()


def test_a_tampered_wheel_fails_the_install(tmp_path, wheel):
    pinned = sha256(wheel)
    make_wheel(wheel.parent, "tinypkg", "1.0", code="print('not the reviewed code')\n")  # same name, other bytes
    done = pip_install(requirements(tmp_path, pinned), wheel.parent, tmp_path / "target")
    assert done.returncode != 0
    assert "DO NOT MATCH THE HASHES" in done.stderr


def test_a_requirement_without_hash_is_refused(tmp_path, wheel):
    path = tmp_path / "requirements.txt"
    path.write_text("tinypkg==1.0\n")
    done = pip_install(path, wheel.parent, tmp_path / "target")
    assert done.returncode != 0
    assert "Hashes are required in --require-hashes mode" in done.stderr
