"""The image cache key: which input changes rebuild an image, and which do not."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from deploy import DeployError, images

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def inputs(tmp_path):
    """Copies of the compute image's inputs, plus an unrelated file beside them."""
    def_file, pins = images.IMAGES["compute"]
    copied_def = shutil.copy(REPO / def_file, tmp_path / "compute.def")
    copied_pins = [shutil.copy(REPO / p, tmp_path / Path(p).name) for p in pins]
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
    def_file, pins = images.IMAGES["compute"]
    in_repo = images.image_inputs_digest(REPO / def_file, [REPO / p for p in pins], "bookworm")
    assert digest(inputs) == in_repo


def test_digest_changes_with_the_definition(inputs):
    before = digest(inputs)
    def_file = inputs[0]
    def_file.write_text(def_file.read_text().replace("python3 python3-venv", "python3 python3-venv procps"))
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


def test_bootstrap_header_keeps_the_header_and_arguments_only():
    header = images.bootstrap_header((REPO / "containers" / "compute.def").read_text())
    assert "Bootstrap: debootstrap" in header and "MirrorURL: {{ MIRROR }}" in header
    assert "%arguments" in header and "SUITE=" in header
    sections = [line.split()[0] for line in header.splitlines() if line.startswith("%")]
    assert sections == ["%arguments"]


def test_no_mirror_host_is_written_into_the_definition():
    text = (REPO / "containers" / "compute.def").read_text()
    mirror_line = next(line for line in text.splitlines() if line.startswith("MirrorURL:"))
    assert mirror_line.split(":", 1)[1].strip() == "{{ MIRROR }}"


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
    for def_file, pins in images.IMAGES.values():
        assert (REPO / def_file).is_file()
        assert all((REPO / p).is_file() for p in pins)
