"""scripts/toppipe, the desktop's one command: which environment it picks, and the bash
twin of deploy.images.digest that finds the client image without Python."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from deploy import images
from tests.no_python import host_python_calls, no_python_path

REPO = Path(__file__).resolve().parents[2]
#: What the entry script reads of a checkout.
ENTRY_FILES = ("scripts/toppipe", "scripts/toppipe-python", "scripts/config-version", "scripts/toppipe.d", "containers",
               "config/versions.yml", "requirements.txt", "requirements")  # fmt: skip


def bash_digest(name: str, repo: Path = REPO) -> str:
    script = f"source scripts/toppipe.d/digest.sh && image_digest {name}"
    return subprocess.run(["bash", "-c", script], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


@pytest.mark.parametrize("name", sorted(images.IMAGES))
def test_the_bash_digest_is_deploys_digest(name):
    assert bash_digest(name) == images.digest(name)


@pytest.fixture
def checkout(tmp_path):
    """A copy of what the entry script reads, with a .venv made for its pins (the test's Python)."""
    repo = tmp_path / "repo"
    for part in ENTRY_FILES:
        source, target = REPO / part, repo / part
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, target)
    (repo / ".venv" / "bin").mkdir(parents=True)
    (repo / ".venv" / "bin" / "python").symlink_to(sys.executable)
    stamp = hashlib.sha256((repo / "requirements.txt").read_bytes()).hexdigest()
    (repo / ".venv" / ".toppipe-installed").write_text(stamp + "\n")
    return repo


def entry(repo: Path, *args: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """scripts/toppipe of *repo* with a PATH that has neither Python nor Apptainer (unless *env* gives one)."""
    environ = {k: v for k, v in os.environ.items() if k not in ("TOPPIPE_ENV", "PYTHON")}
    if "PATH" not in env:
        env["PATH"] = no_python_path(tmp_path / f"path-{len(list(tmp_path.glob('path-*')))}", without=("apptainer",))
    environ |= {"XDG_CACHE_HOME": str(tmp_path / "cache"), **env}
    return subprocess.run([str(repo / "scripts" / "toppipe"), *args], capture_output=True, text=True, env=environ)


def test_a_venv_made_for_the_current_pins_runs_toppipe(checkout, tmp_path):
    found = entry(checkout, "env", tmp_path=tmp_path)
    assert found.returncode == 0, found.stderr
    assert found.stdout.split() == ["venv", f"{checkout}/.venv/bin/python"]
    ran = entry(checkout, "python", "-c", "import sys; print(sys.executable)", tmp_path=tmp_path)
    assert ran.stdout.strip() == f"{checkout}/.venv/bin/python"


def test_a_venv_of_other_pins_gives_way_to_the_image_named_by_its_digest(checkout, tmp_path):
    with open(checkout / "requirements.txt", "a") as pins:
        pins.write("# changed\n")
    found = entry(checkout, "env", tmp_path=tmp_path)
    assert found.returncode == 0, found.stderr
    wanted = bash_digest("client", checkout)
    assert wanted != images.digest("client")  # the changed pins are in the client image's digest
    assert found.stdout.split() == ["image", f"{tmp_path}/cache/toppipe/images/client-{wanted}.sif"]


def test_the_remembered_digest_follows_an_edit(checkout, tmp_path):
    before = entry(checkout, "env", tmp_path=tmp_path, TOPPIPE_ENV="image").stdout
    assert before == entry(checkout, "env", tmp_path=tmp_path, TOPPIPE_ENV="image").stdout  # remembered
    definition = checkout / "containers" / "client.def"
    definition.write_text(definition.read_text().replace("graphviz", "graphviz "))
    after = entry(checkout, "env", tmp_path=tmp_path, TOPPIPE_ENV="image").stdout
    assert after != before
    assert after.strip().endswith(f"client-{bash_digest('client', checkout)}.sif")


@pytest.mark.parametrize(
    "args, env, says",
    [
        (("frobnicate", "inventories/local"), {}, "'frobnicate' is not a toppipe command"),
        ((), {}, "usage: scripts/toppipe"),
        (("status", "inventories/local"), {"TOPPIPE_ENV": "conda"}, "TOPPIPE_ENV=conda: not an environment"),
        (("status", "inventories/local"), {"TOPPIPE_ENV": "image"}, "needs Apptainer; install it, or run scripts/setup"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(checkout, tmp_path, args, env, says):
    found = entry(checkout, *args, tmp_path=tmp_path, **env)
    assert found.returncode == 2
    assert says in found.stderr and len(found.stderr.strip().splitlines()) == 1, found.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="as a user, the build's checks come first (subordinate ids)")
def test_a_failed_image_build_names_its_step_shows_its_log_and_leaves_nothing(checkout, tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "apptainer").write_text("#!/bin/sh\necho apptainer failed here >&2\nexit 99\n")
    (tmp_path / "bin" / "apptainer").chmod(0o755)
    path = f"{tmp_path}/bin:" + no_python_path(tmp_path / "path", without=("apptainer",))
    found = entry(checkout, "status", "inventories/local", tmp_path=tmp_path, TOPPIPE_ENV="image", PATH=path)
    assert found.returncode == 2
    base = f"base-{bash_digest('base', checkout)}"
    assert f"error: building image {base}: 1/3 bootstrap (debootstrap, as root) failed (exit 99)" in found.stderr
    assert found.stderr.rstrip().endswith("apptainer failed here"), found.stderr  # the log's last lines
    cached = tmp_path / "cache" / "toppipe" / "images"
    assert sorted(p.name for p in cached.iterdir() if p.name != ".client-digest") == [f"{base}.log"]  # no image, no build folder


def test_the_pinned_python_on_path_means_venv_and_is_found_without_running_a_python(checkout, tmp_path):
    (checkout / ".venv" / ".toppipe-installed").write_text("other pins\n")
    path = no_python_path(tmp_path / "nopy", without=("apptainer",))
    assert entry(checkout, "env", tmp_path=tmp_path, PATH=path).stdout.split()[0] == "image"
    pinned = tmp_path / "pinned"
    pinned.mkdir()
    (pinned / "python3.11").write_text(f"#!/bin/sh\necho \"$0 $*\" >> {tmp_path}/nopy/host-python.log\nexit 127\n")
    (pinned / "python3.11").chmod(0o755)
    found = entry(checkout, "env", tmp_path=tmp_path, PATH=f"{pinned}:{path}")
    assert found.stdout.split() == ["venv", f"{checkout}/.venv/bin/python"], found.stderr  # scripts/setup would make it
    assert host_python_calls(tmp_path / "nopy") == ""  # neither python3.11 nor python3 was started to find out


def test_notebook_of_a_site_never_brought_up_says_how_in_one_line(tmp_path):
    env = {**os.environ, "TOPPIPE_ENV": "venv", "TOPPIPE_STATE_DIR": str(tmp_path)}
    found = subprocess.run([str(REPO / "scripts" / "toppipe"), "notebook", "inventories/local"], cwd=REPO, env=env, capture_output=True, text=True)
    assert found.returncode == 2
    assert found.stderr.strip().splitlines() == [f"error: site local has no connection record in {tmp_path}/local; bring it up first: python -m deploy up inventories/local"]


def bash_build(script: str, repo: Path = REPO, **env: str) -> subprocess.CompletedProcess:
    source = "source scripts/toppipe.d/digest.sh && source scripts/toppipe.d/build.sh && "
    environ = {k: v for k, v in os.environ.items() if k != "TOPPIPE_DEBIAN_MIRROR"} | env
    return subprocess.run(["bash", "-c", source + script], cwd=repo, capture_output=True, text=True, env=environ)


APT_SOURCES = {
    "one-line, with options": {"sources.list": "# a comment\ndeb [signed-by=/k.gpg] http://mirror.example/debian/ bookworm main\n"
                                               "deb http://security.example/debian-security bookworm-security main\n"},
    "deb822 only": {"sources.list.d/debian.sources": "Types: deb\nURIs: http://a.example/debian-security\n\nTypes: deb\nURIs: https://b.example/pub/debian\n"},
    "no /debian ending": {"sources.list.d/x.list": "deb http://security.example/debian-security s main\ndeb http://c.example/debian-mirror s main\n"},
    "none": {"sources.list": "deb http://ubuntu.example/ubuntu noble main\n"},
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(APT_SOURCES))
def test_the_bash_mirror_is_deploys_mirror(case, tmp_path):
    for name, text in APT_SOURCES[case].items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = bash_build(f"debian_mirror {tmp_path}")
    try:
        wanted = images.debian_mirror(tmp_path)
    except images.DeployError as error:
        assert found.returncode == 2 and found.stderr.strip() == f"error: {error}"
    else:
        assert (found.returncode, found.stdout.strip()) == (0, wanted), found.stderr
    overridden = bash_build(f"debian_mirror {tmp_path}", TOPPIPE_DEBIAN_MIRROR="http://override.example/debian/")
    assert overridden.stdout.strip() == "http://override.example/debian"


@pytest.mark.parametrize("name", sorted(images.IMAGES))
def test_the_bash_build_args_are_deploys(name):
    base = Path(f"/images/{images.IMAGES[name].base}.sif") if images.IMAGES[name].base else None
    found = bash_build(f"image_build_args {name} 0123456789abcdef {base or '-'}")
    assert found.returncode == 0, found.stderr
    wanted = images.build_args(name, "0123456789abcdef", base)
    assert found.stdout.splitlines() == [f"{key}={value}" for key, value in wanted.items()]


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("runuser") is None, reason="runs the check as another user (root's runuser)")
def test_a_user_who_may_not_build_images_is_told_what_to_ask_for_in_one_line():
    """``nobody`` has no subordinate id range: one line names it, with Apptainer's command for the admin."""
    with tempfile.TemporaryDirectory() as folder:  # (one that nobody can enter, unlike pytest's)
        os.chmod(folder, 0o755)
        (Path(folder) / "apptainer").write_text("#!/bin/sh\nexit 99\n")  # found on PATH, never run by the check
        (Path(folder) / "apptainer").chmod(0o755)
        check = [str(REPO / "scripts" / "toppipe.d" / "build-image"), "--check", f"{folder}/client-0123456789abcdef.sif"]
        without = no_python_path(Path(folder) / "path", without=("apptainer", "singularity"))
        os.chmod(Path(folder) / "path", 0o755)
        lines = {}
        for path in (f"{folder}:{without}", without):
            found = subprocess.run(["runuser", "-u", "nobody", "--", "env", f"PATH={path}", *check], capture_output=True, text=True)
            assert found.returncode == 2, found.stderr
            (lines[path],) = found.stderr.strip().splitlines()
    no_range, no_apptainer = lines.values()
    assert no_range.startswith("error: building image client-0123456789abcdef: nobody has no subordinate id range")
    assert "ask your admin to run 'apptainer config fakeroot --add nobody'" in no_range
    assert "neither apptainer nor singularity is on PATH; install Apptainer" in no_apptainer


def test_unpacked_trees_of_other_digests_are_removed_unless_a_command_runs_from_them(tmp_path):
    """prune_client_trees (after a new tree is unpacked): a tree whose lock a running command
    holds (run_in_image holds it, shared, for its whole life) stays; unused ones go."""
    for name in ("client-aaaa.d", "client-bbbb.d", "client-new.d", "client-cccc.d.removed.7"):
        (tmp_path / name / "opt").mkdir(parents=True)
    holder = subprocess.Popen(["flock", "-s", str(tmp_path / "client-bbbb.d" / ".in-use"), "sh", "-c", "echo held; exec sleep 600"],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline() == "held\n"  # the lock is held from here
        script = f"source scripts/toppipe.d/env.sh && prune_client_trees {tmp_path}/client-new.d"
        subprocess.run(["bash", "-c", script], cwd=REPO, check=True)
        assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["client-bbbb.d", "client-new.d"]
    finally:
        holder.kill()
        holder.wait()
