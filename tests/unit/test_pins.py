"""The pins: every pin file parses, pins exactly with hashes and agrees with the others, with its
short list and with the images; every other version comes from config/versions.yml; nothing
installs a Python package without a hash."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from deploy import DeployError, artifacts, images, pins

REPO = Path(__file__).resolve().parents[2]
PIN_FILES = pins.pin_files(REPO)
CLIENT = REPO / "requirements.txt"
VERSIONS = yaml.safe_load((REPO / "config" / "versions.yml").read_text())
#: Parts installed beside the client's packages (hosts, images, the local site's services): same versions.
CLIENT_PARTS = ("scheduler", "worker", "dashboard")


def test_every_part_has_a_short_list_and_a_pin_file():
    parts = {p.stem for p in pins.short_lists(REPO)}
    assert parts >= {"client", "scheduler", "worker", "dashboard", "test", "tools"}
    compiled = {pins.compiled_from(p) for p in pins.short_lists(REPO)}
    assert compiled == set(PIN_FILES)


@pytest.mark.parametrize("path", PIN_FILES, ids=lambda p: p.name)
def test_every_requirement_is_pinned_with_hashes(path):
    assert pins.read(path)


@pytest.mark.parametrize("short_list", pins.short_lists(REPO), ids=lambda p: p.name)
def test_a_pin_file_is_compiled_from_its_short_list(short_list):
    pin_file = pins.compiled_from(short_list)
    header = pin_file.read_text().splitlines()[1]
    assert f"--python-version {VERSIONS['python']} " in header, f"{pin_file.name}: compiled for another Python: {header}"
    assert f"requirements/in/{short_list.name} -o {pin_file.relative_to(REPO)}" in header
    pinned = pins.read(pin_file)
    for name, version in pins.listed(short_list.read_text()).items():
        assert name in pinned, f"{short_list.name} lists {name}, {pin_file.name} lacks it: run scripts/compile-requirements"
        assert version in (None, pinned[name]), f"{name}: {version} in {short_list.name}, {pinned[name]} in {pin_file.name}"


def test_no_package_is_pinned_to_two_versions():
    seen: dict[str, tuple[str, str]] = {}
    for path in PIN_FILES:
        for name, version in pins.read(path).items():
            other_version, other_file = seen.setdefault(name, (version, path.name))
            assert version == other_version, f"{name}: {version} in {path.name} but {other_version} in {other_file}"


@pytest.mark.parametrize("part", CLIENT_PARTS)
def test_a_part_beside_the_client_has_the_client_versions(part):
    client = pins.read(CLIENT)
    for name, version in pins.read(REPO / "requirements" / f"{part}.txt").items():
        assert client.get(name) == version, f"{part}.txt: {name} {version}, requirements.txt: {client.get(name)}"


@pytest.mark.parametrize("image", [n for n in images.IMAGES if any(images.IMAGES[b].pins for b in images.chain(n))])
def test_an_image_installs_the_client_versions(image):
    client = pins.read(CLIENT)
    installed = {}
    for name in images.chain(image):
        for pin_file in images.IMAGES[name].pins:
            installed.update(pins.read(REPO / pin_file))
    shared = set(installed) & set(client)
    assert shared, image
    assert {n: installed[n] for n in shared} == {n: client[n] for n in shared}
    assert "dask" in shared and "distributed" in shared


def test_a_bad_pin_file_is_refused(tmp_path):
    with pytest.raises(pins.PinError, match="not an exact pin"):
        pins.parse("dask>=1.0\n", "a.txt")
    with pytest.raises(pins.PinError, match="dask has no hash"):
        pins.parse("dask==1.0\n", "a.txt")
    with pytest.raises(pins.PinError, match="pinned twice"):
        pins.parse("dask==1.0 --hash=sha256:00\nDask==2.0 --hash=sha256:00\n", "a.txt")
    assert pins.parse("# c\nDask_Jobqueue[x]==0.9 \\\n    --hash=sha256:00\n    # via y\n") == {"dask-jobqueue": "0.9"}


# -- versions that are not Python packages --------------------------------------------


def test_every_recorded_version_is_read_by_a_script_or_an_image():
    readers = "\n".join(p.read_text() for p in [*(REPO / "scripts").glob("*"), *(REPO / "scripts" / "lab.d").glob("*")] if p.is_file())
    taken_by_images = {key for spec in images.IMAGES.values() for key in spec.versions} | {"debian"}
    for key in VERSIONS:
        assert key in taken_by_images or re.search(rf"(config|lab)[-_]version {key}\b", readers), f"nothing reads {key}:"


def test_a_missing_version_names_the_file_and_the_key(tmp_path):
    versions = tmp_path / "versions.yml"
    versions.write_text('python: "3.11"\n')
    assert artifacts.version("python", versions) == "3.11"
    with pytest.raises(DeployError, match=r"versions.yml: no 'slurm:' version"):
        artifacts.version("slurm", versions)


@pytest.mark.parametrize("key", sorted(VERSIONS))
def test_scripts_read_the_same_versions_as_the_code(key):
    done = subprocess.run([REPO / "scripts" / "config-version", key], capture_output=True, text=True, check=True)
    assert done.stdout == f"{VERSIONS[key]}\n" == f"{artifacts.version(key)}\n"


def test_an_unknown_version_is_one_error_line():
    done = subprocess.run([REPO / "scripts" / "config-version", "nope"], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr == "error: config/versions.yml: no 'nope:' version\n"


def test_definitions_take_versions_only_from_build_args():
    for name, spec in images.IMAGES.items():
        text = (REPO / spec.definition).read_text()
        for key in [*images.version_args(name), *(["SUITE"] if spec.base is None else [])]:
            default = re.search(rf"^\s+{key}=(.*)$", text, re.MULTILINE)
            assert default and default.group(1).startswith("unset-"), f"{spec.definition}: {key} has a version of its own"


# -- pip install lines ------------------------------------------------------------------

#: pip options that take a value (the next word is not a requirement).
VALUE_OPTIONS = {"-r", "--requirement", "-c", "--constraint", "--progress-bar", "-t", "--target", "-d", "--dest",
                 "-f", "--find-links", "-i", "--index-url", "--extra-index-url", "--platform", "--python-version",
                 "--implementation", "--abi", "--prefix", "--root", "-p", "--python"}  # fmt: skip
PIP = re.compile(r"\bpip3?\s+(install|download)\b")


def pip_commands(text: str) -> list[str]:
    """Every pip install/download command of a shell text, continuation lines joined."""
    commands = []
    for line in text.replace("\\\n", " ").splitlines():
        if line.lstrip().startswith("#"):
            continue
        commands += [part for part in re.split(r";|&&|\|\|?", line) if PIP.search(part)]
    return commands


def unpinned(command: str) -> str | None:
    """Why a pip command could install something unpinned, or None. With --require-hashes pip
    refuses any requirement without a hash, so what is left is a literal requirement on the line."""
    words = shlex.split(PIP.split(command, 1)[-1], comments=True)
    if "--require-hashes" not in words:
        return "no --require-hashes"
    taken = {i + 1 for i, word in enumerate(words) if word in VALUE_OPTIONS}
    loose = [w for i, w in enumerate(words) if i not in taken and not w.startswith(("-", "$", ">", "2>"))]
    return f"a requirement outside a pin file: {loose[0]}" if loose else None


SHELL_FILES = sorted(p for p in [*(REPO / "containers").glob("*.def"), *(REPO / "scripts").glob("*"), *(REPO / "scripts" / "lab.d").glob("*")] if p.is_file())  # fmt: skip


@pytest.mark.parametrize("path", SHELL_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_pip_install_takes_pin_files_with_hashes(path):
    for command in pip_commands(path.read_text()):
        assert unpinned(command) is None, f"{path.relative_to(REPO)}: {unpinned(command)}: {command.strip()}"


def test_the_python_code_installs_with_hashes_only():
    for path in sorted([*REPO.glob("deploy/**/*.py"), *REPO.glob("roles/**/*.py"), *REPO.glob("toppipe/**/*.py")]):
        text = path.read_text()
        if re.search(r"""\bpip3?["',\s]+(install|download)\b""", text):
            assert "--require-hashes" in text, path.relative_to(REPO)


def test_the_install_check_catches_unpinned_lines():
    text = 'pip install uv==0.1\npip install --require-hashes numpy\npip install --require-hashes \\\n  --progress-bar off -r x.txt\n'
    found = [unpinned(c) for c in pip_commands(text)]
    assert found == ["no --require-hashes", "a requirement outside a pin file: numpy", None]
    assert unpinned('python -m pip install --require-hashes --no-deps "${args[@]}"') is None
