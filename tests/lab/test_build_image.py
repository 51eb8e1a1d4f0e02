"""``python -m deploy build inventories/lab``: the site's images, built once, cached after.

Needs the Apptainer that ``scripts/lab up`` installs (the ``lab`` fixture
brings the lab up as root). Builds go to the same cache as ``up``'s (a cold
build of all six images takes about 6 minutes here), so the suite builds
them once; a changed input is rebuilt in a copy of the repository.
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

from deploy import images
from deploy.pins import read as pin_versions

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
APPTAINER = "/usr/local/bin/apptainer"
LINE = re.compile(r"^(?P<name>[a-z]+)\s+(?P<digest>[0-9a-f]{16})\s+(?P<path>\S+\.sif)\s+(?P<how>built in \d+ s|cached)$", re.M)


@pytest.fixture(scope="module")
def apptainer(lab) -> str:
    found = APPTAINER if os.path.exists(APPTAINER) else shutil.which("apptainer")
    if not found:
        pytest.skip(f"no apptainer ({APPTAINER} is installed by scripts/lab up)")
    return found


def deploy_build(cache: Path | None = None, repo: Path = REPO) -> tuple[subprocess.CompletedProcess, float]:
    """``deploy build`` of the repository at *repo* (its own code first on the path), into *cache* if given."""
    env = {**os.environ, "PYTHONPATH": str(repo)}
    if cache is not None:
        env["XDG_CACHE_HOME"] = str(cache)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "deploy", "build", "inventories/lab"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=1500)  # fmt: skip
    return proc, time.monotonic() - started


def outcomes(stdout: str) -> dict[str, re.Match]:
    return {m["name"]: m for m in LINE.finditer(stdout)}


@pytest.fixture(scope="module")
def built(apptainer):
    """Every image in up's cache, built now where missing: (cache folder, compute image path, its digest, output)."""
    proc, seconds = deploy_build()
    assert proc.returncode == 0, f"build exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    found = outcomes(proc.stdout)
    assert set(found) == set(images.IMAGES), proc.stdout
    print(f"build: {seconds:.1f} s; " + ", ".join(f"{n} {m['how']}" for n, m in found.items()))
    image = Path(found["compute"]["path"])
    return image.parent.parent.parent, image, found["compute"]["digest"], proc.stdout


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
    assert version == pin_versions(REPO / "requirements.txt")["distributed"]


def test_the_image_holds_exactly_the_worker_pins(apptainer, built):
    _, image, _, _ = built
    frozen = {}
    for line in inside(apptainer, image, "/opt/toppipe/venv/bin/python", "-m", "pip", "freeze", "--all").splitlines():
        name, _, version = line.partition("==")
        frozen[re.sub(r"[-_.]+", "-", name).lower()] = version
    pins = pin_versions(REPO / "requirements" / "worker.txt")
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


def test_a_second_build_is_cached(built):
    cache, image, digest, _ = built
    mtime = image.stat().st_mtime_ns
    proc, seconds = deploy_build()
    assert proc.returncode == 0, proc.stderr
    found = outcomes(proc.stdout)
    assert {m["how"] for m in found.values()} == {"cached"}, proc.stdout
    assert found["compute"]["digest"] == digest
    assert image.stat().st_mtime_ns == mtime
    print(f"cached build of {len(found)} images: {seconds:.2f} s")


def test_the_data_and_client_images_hold_their_services(apptainer, built):
    folder = built[1].parent
    path = {name: folder / f"{name}-{images.digest(name)}.sif" for name in images.IMAGES}
    assert inside(apptainer, path["postgres"], "postgres", "--version").startswith("postgres (PostgreSQL) 15.")
    assert inside(apptainer, path["redis"], "redis-server", "--version").startswith("Redis server v=7.")
    assert "sbatch" in inside(apptainer, path["scheduler"], "sh", "-c", "command -v sbatch")
    versions = inside(apptainer, path["client"], "/opt/toppipe/venv/bin/python", "-c",
                      "import jupyterlab, distributed; print(jupyterlab.__version__, distributed.__version__)").split()  # fmt: skip
    pins = pin_versions(REPO / "requirements.txt")
    assert versions == [pins["jupyterlab"], pins["distributed"]]
    assert inside(apptainer, path["client"], "lsyncd", "--version").startswith("Version: 2.")


def _link_or_copy(source, target):
    try:
        os.link(source, target)
    except OSError:  # another filesystem
        shutil.copy2(source, target)


def test_a_changed_input_rebuilds_exactly_that_image(built, tmp_path):
    """A copy of the repository with redis.def changed: redis is built, every other image comes from the cache."""
    cache, _, _, _ = built
    copy = tmp_path / "repo"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, copy / name)
    redis_def = copy / "containers" / "redis.def"
    redis_def.write_text(redis_def.read_text().replace("%help\n", "%help\n    (rebuilt by the test of a changed input)\n"))
    mine = tmp_path / "cache"
    (mine / "toppipe" / "images").mkdir(parents=True)
    # the images only: beside them are logs, builds in progress and the client's unpacked
    # tree (scripts/toppipe), which a test running beside may be writing
    for sif in (cache / "toppipe" / "images").glob("*.sif"):
        _link_or_copy(sif, mine / "toppipe" / "images" / sif.name)
    proc, seconds = deploy_build(mine, repo=copy)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = outcomes(proc.stdout)
    assert {n for n, m in found.items() if m["how"] != "cached"} == {"redis"}, proc.stdout
    assert found["redis"]["digest"] != images.digest("redis")
    print(f"rebuild of redis alone: {seconds:.1f} s")
