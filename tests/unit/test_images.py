"""The image cache key: which input changes rebuild an image, and which do not."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from deploy import DeployError, images

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def inputs(tmp_path):
    """Copies of the compute image's inputs, plus an unrelated file beside them."""
    spec = images.IMAGES["compute"]
    copied_def = shutil.copy(REPO / spec.definition, tmp_path / "compute.def")
    copied_pins = [shutil.copy(REPO / p, tmp_path / Path(p).name) for p in spec.pins]
    unrelated = tmp_path / "scheduler.txt"
    shutil.copy(REPO / "requirements" / "scheduler.txt", unrelated)
    return Path(copied_def), [Path(p) for p in copied_pins], unrelated


def digest(inputs, suite="bookworm"):
    def_file, pins, _ = inputs
    return images.image_inputs_digest(def_file, pins, suite)


def test_digest_is_stable_and_short(inputs):
    assert digest(inputs) == digest(inputs)
    assert len(digest(inputs)) == 16


def test_digest_ignores_where_the_inputs_are(inputs):
    spec = images.IMAGES["compute"]
    in_repo = images.image_inputs_digest(REPO / spec.definition, [REPO / p for p in spec.pins], "bookworm")
    assert digest(inputs) == in_repo


def test_digest_changes_with_the_definition(inputs):
    before = digest(inputs)
    def_file = inputs[0]
    def_file.write_text(def_file.read_text().replace("pip check", "pip check --verbose"))
    assert digest(inputs) != before


def test_digest_changes_with_a_pinned_version(inputs):
    before = digest(inputs)
    worker = inputs[1][0]
    text = worker.read_text()
    assert "\ndistributed==2026.8.0 " in text
    worker.write_text(text.replace("\ndistributed==2026.8.0 ", "\ndistributed==2026.8.1 "))
    assert digest(inputs) != before


def test_digest_changes_with_the_debian_suite(inputs):
    assert digest(inputs, "bookworm") != digest(inputs, "trixie")


def test_digest_ignores_unrelated_files(inputs):
    before = digest(inputs)
    unrelated = inputs[2]
    unrelated.write_text(unrelated.read_text().replace("==", "==9", 1))
    (unrelated.parent / "README").write_text("changed")
    assert digest(inputs) == before


def test_the_suite_comes_from_config_versions():
    assert images.debian_suite() == "bookworm"


def test_planned_path_is_named_by_image_and_digest(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    artifact = images.planned("compute")
    assert artifact.path == tmp_path / "toppipe" / "images" / f"compute-{artifact.digest}.sif"
    with pytest.raises(DeployError, match="no image named"):
        images.planned("nope")


def bootstrap_header(definition: str) -> str:
    """The bootstrap that build-image runs first for a Debian base: the header and %arguments."""
    script = REPO / "scripts" / "toppipe.d" / "build-image"
    return subprocess.run([str(script), "--header", str(REPO / definition)], check=True, capture_output=True, text=True).stdout


def test_bootstrap_header_keeps_the_header_and_arguments_only():
    header = bootstrap_header("containers/base.def")
    assert "Bootstrap: debootstrap" in header and "MirrorURL: {{ MIRROR }}" in header
    assert "%arguments" in header and "SUITE=" in header
    sections = [line.split()[0] for line in header.splitlines() if line.startswith("%")]
    assert sections == ["%arguments"]


def test_no_mirror_host_is_written_into_a_definition():
    for path in (REPO / "containers").glob("*.def"):
        for line in path.read_text().splitlines():
            assert "://" not in line or line.lstrip().startswith("#"), f"{path.name}: {line}"
    base = (REPO / "containers" / "base.def").read_text()
    mirror_line = next(line for line in base.splitlines() if line.startswith("MirrorURL:"))
    assert mirror_line.split(":", 1)[1].strip() == "{{ MIRROR }}"


def test_only_the_base_image_is_bootstrapped_from_debian():
    for name, spec in images.IMAGES.items():
        header = bootstrap_header(spec.definition)
        if spec.base is None:
            assert "Bootstrap: debootstrap" in header, name
        else:
            assert "Bootstrap: localimage" in header and "From: {{ BASE }}" in header, name


def test_debian_mirror_from_deb822_and_one_line_sources(tmp_path, monkeypatch):
    monkeypatch.delenv("TOPPIPE_DEBIAN_MIRROR", raising=False)
    parts = tmp_path / "sources.list.d"
    parts.mkdir()
    (parts / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security/\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n"
    )
    assert images.debian_mirror(tmp_path) == "http://mirror.example/debian"
    (parts / "debian.sources").unlink()
    (tmp_path / "sources.list").write_text("# x\ndeb [arch=amd64] http://other.example/debian bookworm main\n")
    assert images.debian_mirror(tmp_path) == "http://other.example/debian"
    (tmp_path / "sources.list").write_text("")
    with pytest.raises(DeployError, match="TOPPIPE_DEBIAN_MIRROR"):
        images.debian_mirror(tmp_path)
    monkeypatch.setenv("TOPPIPE_DEBIAN_MIRROR", "http://set.example/debian/")
    assert images.debian_mirror(tmp_path) == "http://set.example/debian"


def test_every_image_input_exists():
    for spec in images.IMAGES.values():
        assert (REPO / spec.definition).is_file()
        assert all((REPO / p).is_file() for p in spec.pins)
        assert spec.base is None or spec.base in images.IMAGES


@pytest.fixture
def repo_copy(tmp_path, monkeypatch):
    """The image inputs of the repository, copied; images.digest reads the copy."""
    for part in ("containers", "requirements", "config"):
        shutil.copytree(REPO / part, tmp_path / part)
    shutil.copy(REPO / "requirements.txt", tmp_path / "requirements.txt")
    monkeypatch.setattr(images, "REPO", tmp_path)
    monkeypatch.setattr(images, "VERSIONS_FILE", tmp_path / "config" / "versions.yml")
    return tmp_path


def _changed_images(repo, edit) -> set[str]:
    before = {name: images.digest(name) for name in images.IMAGES}
    edit(repo)
    return {name for name in images.IMAGES if images.digest(name) != before[name]}


def _bump(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda r: _bump(r / "requirements" / "worker.txt", "\ndistributed==2026.8.0 ", "\ndistributed==2026.8.1 "),
         {"compute", "scheduler", "client"}),
        (lambda r: _bump(r / "requirements" / "scheduler.txt", "\ndask-jobqueue==0.9.0 ", "\ndask-jobqueue==0.9.1 "),
         {"scheduler", "client"}),
        (lambda r: _bump(r / "requirements.txt", "\njupyterlab==4.6.6 ", "\njupyterlab==4.6.7 "), {"client"}),
        (lambda r: _bump(r / "config" / "versions.yml", 'postgresql: "15"', 'postgresql: "16"'), {"postgres"}),
        (lambda r: _bump(r / "config" / "versions.yml", "debian: bookworm", "debian: trixie"), set(images.IMAGES)),
        (lambda r: _bump(r / "config" / "versions.yml", 'python: "3.11"', 'python: "3.13"'), set(images.IMAGES)),
        (lambda r: _bump(r / "config" / "versions.yml", 'slurm: "22.05"', 'slurm: "24.11"'), {"scheduler", "client"}),
        (lambda r: _bump(r / "containers" / "redis.def", "redis-server redis-tools", "redis-server redis-tools procps"), {"redis"}),
    ],
    ids=["worker pin", "scheduler pin", "client pin", "postgresql version", "debian suite", "python version",
         "slurm version", "redis definition"],
)
def test_a_changed_input_changes_exactly_the_images_that_contain_it(repo_copy, edit, expected):
    assert _changed_images(repo_copy, edit) == expected


def test_build_args_are_declared_by_the_definitions_that_take_them():
    for name, spec in images.IMAGES.items():
        text = (REPO / spec.definition).read_text()
        for key in images.version_args(name):
            assert "{{ " + key + " }}" in text, f"{spec.definition} does not use {key}"
