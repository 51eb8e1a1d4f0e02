"""``python -m deploy build inventories/lab``: the compute image, built once, cached after.

Needs the Apptainer that ``scripts/lab up`` installs (the ``lab`` fixture
brings the lab up as root). A cold build takes about 100 s here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.unit.test_pins import parse

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
APPTAINER = "/usr/local/bin/apptainer"
LINE = re.compile(r"^compute\s+(?P<digest>[0-9a-f]{16})\s+(?P<path>\S+\.sif)\s+(?P<how>built in \d+ s|cached)$", re.M)


@pytest.fixture(scope="module")
def apptainer(lab) -> str:
    found = APPTAINER if os.path.exists(APPTAINER) else shutil.which("apptainer")
    if not found:
        pytest.skip(f"no apptainer ({APPTAINER} is installed by scripts/lab up)")
    return found


def deploy_build(cache: Path) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "deploy", "build", "inventories/lab"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    return proc, time.monotonic() - started


@pytest.fixture(scope="module")
def built(apptainer, tmp_path_factory):
    """One cold build into an empty cache: (cache folder, image path, digest, output)."""
    cache = tmp_path_factory.mktemp("cache")
    proc, seconds = deploy_build(cache)
    assert proc.returncode == 0, f"build exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    match = LINE.search(proc.stdout)
    assert match, proc.stdout
    assert match["how"].startswith("built in"), proc.stdout
    image = Path(match["path"])
    print(f"cold build: {seconds:.1f} s, {image.stat().st_size / 2**20:.0f} MiB")
    return cache, image, match["digest"], proc.stdout


def inside(apptainer: str, image: Path, *argv: str) -> str:
    proc = subprocess.run([apptainer, "exec", str(image), *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}: {proc.stderr}"
    return proc.stdout


def test_the_image_is_in_the_cache_named_by_its_digest(built):
    cache, image, digest, _ = built
    assert image.is_file()
    assert image == cache / "toppipe" / "images" / f"compute-{digest}.sif"


def test_the_image_runs_the_pinned_distributed(apptainer, built):
    _, image, _, _ = built
    version = inside(apptainer, image, "/opt/toppipe/venv/bin/python", "-c",
                     "import dask, distributed; print(distributed.__version__)").strip()  # fmt: skip
    assert version == parse(REPO / "requirements.txt")["distributed"]


def test_the_image_holds_exactly_the_worker_pins(apptainer, built):
    _, image, _, _ = built
    frozen = {}
    for line in inside(apptainer, image, "/opt/toppipe/venv/bin/python", "-m", "pip", "freeze", "--all").splitlines():
        name, _, version = line.partition("==")
        frozen[re.sub(r"[-_.]+", "-", name).lower()] = version
    pins = parse(REPO / "requirements" / "worker.txt")
    assert {name: frozen.get(name) for name in pins} == pins
    extra = set(frozen) - set(pins) - {"pip", "setuptools"}
    assert not extra, f"packages in the image that worker.txt does not pin: {sorted(extra)}"


def test_the_image_records_its_inputs_and_drops_the_build_ca(apptainer, built):
    _, image, digest, _ = built
    assert inside(apptainer, image, "cat", "/opt/toppipe/inputs-digest").strip() == digest
    labels = subprocess.run([apptainer, "inspect", "--labels", str(image)], capture_output=True, text=True).stdout
    assert f"org.toppipe.inputs-digest: {digest}" in labels
    assert inside(apptainer, image, "sh", "-c", "ls /opt/toppipe; ls /var/lib/apt/lists | wc -l").split() == \
        ["inputs-digest", "venv", "worker.txt", "0"]  # fmt: skip


def test_a_second_build_is_cached_and_fast(built):
    cache, image, digest, _ = built
    mtime = image.stat().st_mtime_ns
    proc, seconds = deploy_build(cache)
    assert proc.returncode == 0, proc.stderr
    match = LINE.search(proc.stdout)
    assert match and match["how"] == "cached" and match["digest"] == digest, proc.stdout
    assert seconds < 2, f"a cached build took {seconds:.1f} s"
    assert image.stat().st_mtime_ns == mtime
