"""Every pin file parses, pins exactly with hashes, and agrees with the others."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PIN_FILES = [REPO / "requirements.txt", *sorted((REPO / "requirements").glob("*.txt"))]
REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)")


def parse(path: Path) -> dict[str, str]:
    """name -> version; fails on any requirement that is not pinned with hashes."""
    pins: dict[str, str] = {}
    text = path.read_text().replace("\\\n", " ")
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = REQUIREMENT.match(line)
        assert match, f"{path.name}:{number}: not an exact pin: {line[:60]}"
        assert "--hash=sha256:" in line, f"{path.name}:{number}: {match.group(1)} has no hash"
        name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
        assert name not in pins, f"{path.name}: {name} pinned twice"
        pins[name] = match.group(3)
    return pins


def test_pin_files_exist():
    assert {p.name for p in PIN_FILES} >= {"requirements.txt", "scheduler.txt", "worker.txt", "test.txt"}


@pytest.mark.parametrize("path", PIN_FILES, ids=lambda p: p.name)
def test_every_requirement_is_pinned_with_hashes(path):
    assert parse(path)


def test_no_package_is_pinned_to_two_versions():
    seen: dict[str, tuple[str, str]] = {}
    for path in PIN_FILES:
        for name, version in parse(path).items():
            if name in seen:
                other_version, other_file = seen[name]
                assert version == other_version, f"{name}: {version} in {path.name} but {other_version} in {other_file}"
            else:
                seen[name] = (version, path.name)


def test_parts_share_the_client_versions_of_dask():
    client = parse(REPO / "requirements.txt")
    for part in ("scheduler", "worker"):
        pins = parse(REPO / "requirements" / f"{part}.txt")
        for name in ("dask", "distributed", "cloudpickle", "msgpack", "tornado"):
            assert pins.get(name) == client[name], f"{part}.txt: {name}"


def test_a_conflicting_pin_is_detected(tmp_path):
    a = tmp_path / "a.txt"
    a.write_text("dask==1.0 \\\n    --hash=sha256:00\n")
    b = tmp_path / "b.txt"
    b.write_text("dask==2.0 \\\n    --hash=sha256:00\n")
    assert parse(a)["dask"] != parse(b)["dask"]
    bad = tmp_path / "c.txt"
    bad.write_text("dask>=1.0\n")
    with pytest.raises(AssertionError, match="not an exact pin"):
        parse(bad)
