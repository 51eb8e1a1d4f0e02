"""The apptainer runtime: the instance-list parser on recorded output, and the scripts it builds.

``tests/data/apptainer/instance_list_*.json`` were recorded on the lab's node1
(Apptainer 1.4.5) with ``apptainer instance list --json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from deploy import UserError
from deploy.resources import ServiceSpec
from deploy.runtime import ApptainerRuntime, Instance, State, get_runtime, parse_instance_list
from deploy.runtime.apptainer import instance_list_command, instance_name

DATA = Path(__file__).resolve().parents[1] / "data" / "apptainer"
RUNTIME = ApptainerRuntime()


def recorded(name: str) -> str:
    return (DATA / f"instance_list_{name}.json").read_text()


def make_spec(**overrides) -> ServiceSpec:
    fields = dict(
        site="rt-unit", name="web", argv=("python3", "-m", "http.server", "8000"), rundir="/run/x/web",
        workdir="/srv/app", env=(("DASK_CONFIG", "/etc/dask"), ("LIST", "a,b c")), env_file="/secrets/web.env",
        ports=(("127.0.0.1", 8000),), image="/images/compute.sif", binds=("/data", "/srv/shared:/shared:ro"),
    )  # fmt: skip
    fields.update(overrides)
    return ServiceSpec(**fields)


# -- the instance-list fact --------------------------------------------------


def test_parse_recorded_empty_list():
    assert parse_instance_list(recorded("empty")) == []
    assert parse_instance_list("") == []


def test_parse_recorded_one_instance():
    [web] = parse_instance_list(recorded("one"))
    assert web == Instance(
        name="rt-rec.web", pid=4627, image="/tmp/rt-rec/rt.sif", ip="",
        log_out="/home/toppipe/.apptainer/instances/logs/node1/toppipe/rt-rec.web.out",
        log_err="/home/toppipe/.apptainer/instances/logs/node1/toppipe/rt-rec.web.err",
    )  # fmt: skip


def test_parse_recorded_two_instances():
    instances = parse_instance_list(recorded("two"))
    assert [(i.name, i.pid) for i in instances] == [("rt-rec.scheduler", 4667), ("rt-rec.web", 4627)]
    assert all(isinstance(i.pid, int) and i.image == "/tmp/rt-rec/rt.sif" for i in instances)


def test_parse_older_output_without_log_paths():
    """Older Singularity versions print only instance, pid and img."""
    text = json.dumps({"instances": [{"instance": "s-web", "pid": 12, "img": "/i.sif"}]})
    assert parse_instance_list(text) == [Instance(name="s-web", pid=12, image="/i.sif")]


@pytest.mark.parametrize("text", ["INSTANCE NAME    PID     IP    IMAGE", '{"something": 1}', "[]"])
def test_parse_refuses_what_is_not_the_json_listing(text):
    with pytest.raises(ValueError, match="instance list --json"):
        parse_instance_list(text)


def test_instance_list_command_finds_either_tool():
    script = instance_list_command("rt-unit.*")
    assert "command -v apptainer || command -v singularity" in script
    assert "instance list --json" in script and "'rt-unit.*'" in script
    assert "'rt-unit.*'" in RUNTIME.instance_list_command("rt-unit")


# -- names and registration ---------------------------------------------------


def test_instance_names_use_only_allowed_characters():
    assert instance_name("lab", "scheduler") == "lab.scheduler"
    assert instance_name("lab", "worker/1 x@y") == "lab.worker_1_x_y"
    assert instance_name("lab", "db.v2_a") == "lab.db.v2_a"


def test_registered_and_unknown_names():
    assert isinstance(get_runtime("apptainer"), ApptainerRuntime)
    with pytest.raises(UserError, match="not available"):
        get_runtime("docker")


# -- generated scripts ----------------------------------------------------------


def test_start_command_stops_then_starts_an_instance_and_execs_the_service():
    spec = make_spec()
    script = RUNTIME.start_command(spec)
    assert "command -v apptainer || command -v singularity" in script
    start = next(line for line in script.splitlines() if "instance start" in line)
    for part in ("--cleanenv", "--env TOPPIPE_SERVICE=rt-unit/web", "--env DASK_CONFIG=/etc/dask",
                 "--env 'LIST=a,b c'", "--env-file /secrets/web.env", "--bind /data",
                 "--bind /srv/shared:/shared:ro", '"$image" "$inst"'):  # fmt: skip
        assert part in start, part
    execute = next(line for line in script.splitlines() if "instance://" in line)
    for part in ("setsid", " exec ", "--cleanenv", "--env TOPPIPE_SERVICE=rt-unit/web", "--env-file /secrets/web.env",
                 "--pwd /srv/app", 'instance://"$inst" python3 -m http.server 8000', '>>"$log" 2>&1 &'):  # fmt: skip
        assert part in execute, part
    assert "inst=rt-unit.web" in script and "image=/images/compute.sif" in script
    assert "d=/run/x/web" in script and spec.digest() in script
    # an instance of that name is stopped (and marked processes killed) before the new one starts
    assert script.index('stop_instances "$inst"') < script.index("instance start")
    assert script.index("grep -lzxF TOPPIPE_SERVICE=rt-unit/web /proc/[0-9]*/environ") < script.index("instance start")
    assert script.index("kill -TERM $pids") < script.index("instance start")
    assert "/dev/tcp/" in script and "exited while starting" in script and "tail -n 15" in script


def test_start_without_an_image_fails_on_the_host_with_the_reason():
    result = subprocess.run(["bash", "-c", RUNTIME.start_command(make_spec(image=None))], capture_output=True, text=True)
    assert result.returncode == 1 and "web: no image to run" in result.stderr


def test_status_stop_sweep_leftovers_commands():
    spec = make_spec()
    status = RUNTIME.status_command(spec)
    assert "instance list --json" in status and "inst=rt-unit.web" in status
    assert "grep -qzxF TOPPIPE_SERVICE=rt-unit/web /proc/$pid/environ" in status
    assert "port:$hp=open" in status
    stop = RUNTIME.stop_command(spec)
    assert "instance stop" in stop and "inst=rt-unit.web" in stop and 'stop_instances "$inst"' in stop
    assert "kill -TERM" in stop and 'rm -f "$d/pid" "$d/digest"' in stop
    sweep = RUNTIME.sweep_command("rt-unit")
    assert "stop_instances 'rt-unit.*'" in sweep and "grep -lzxE 'TOPPIPE_SERVICE=rt-unit/.*'" in sweep
    leftovers = RUNTIME.leftovers_command("rt-unit")
    assert "instance_pids 'rt-unit.*'" in leftovers and "TOPPIPE_SERVICE=rt-unit/.*" in leftovers


# -- the bash, run against a stand-in apptainer that prints recorded output ---


@pytest.fixture
def fake_apptainer(tmp_path):
    """An ``apptainer`` on PATH that lists the recorded instance rt-rec.web, or nothing once $tmp/empty exists."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "apptainer"
    fake.write_text(
        "#!/bin/bash\n"
        f"if [ -e {tmp_path}/empty ]; then cat {DATA}/instance_list_empty.json; "
        f"else cat {DATA}/instance_list_one.json; fi\n"
    )
    fake.chmod(0o755)
    return tmp_path


def test_status_judges_running_from_the_listing_and_the_marker(fake_apptainer, tmp_path):
    spec = make_spec(site="rt-rec", name="web", rundir=str(tmp_path / "svc"), ports=())
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"}
    child = subprocess.Popen(["sleep", "60"], env={**env, "TOPPIPE_SERVICE": "rt-rec/web"})
    try:
        (tmp_path / "svc").mkdir()
        (tmp_path / "svc" / "pid").write_text(f"{child.pid}\n")
        (tmp_path / "svc" / "digest").write_text(spec.digest() + "\n")

        def status():
            out = subprocess.run(["bash", "-c", RUNTIME.status_command(spec)], env=env, capture_output=True, text=True)
            return RUNTIME.parse_status(out.stdout)

        running = status()
        assert running.state is State.RUNNING and running.pid == child.pid and running.digest == spec.digest()
        (tmp_path / "empty").touch()  # the instance is gone: not running, whatever the process
        assert status().state is State.STOPPED
        os.remove(tmp_path / "empty")
        child.kill()
        child.wait()
        assert status().state is State.STOPPED  # listed, but the service process is gone
    finally:
        child.kill()


def test_leftovers_lists_instance_pids(fake_apptainer, tmp_path):
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"}
    out = subprocess.run(["bash", "-c", RUNTIME.leftovers_command("rt-rec")], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["4627"]


# -- the spec's digest ----------------------------------------------------------


def test_digest_changes_with_image_and_binds():
    base = make_spec()
    assert base.digest() == make_spec().digest()
    assert make_spec(image="/images/other.sif").digest() != base.digest()
    assert make_spec(binds=("/data",)).digest() != base.digest()
    assert make_spec(binds=()).digest() != base.digest()
    assert make_spec(image=None).digest() != base.digest()


def test_digest_of_specs_without_a_container_is_unchanged():
    """Adding the image fields must not restart every native service once."""
    spec = ServiceSpec(site="s", name="n", argv=(sys.executable,), rundir="/r", workdir="/w")
    legacy = {k: v for k, v in asdict(spec).items() if k not in ("image", "binds", "stop_argv", "runtime", "check_argv", "files", "after", "stop_grace", "ends_with_scheduler")}
    import hashlib

    expected = hashlib.sha256(json.dumps(legacy, sort_keys=True).encode()).hexdigest()[:16]
    assert spec.digest() == expected
