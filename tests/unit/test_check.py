"""The pure logic of ``python -m deploy check``: pins and versions, judgements, batches, the table."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from deploy.checks import probes, shared
from deploy.checks.hosts import Section, batch_script, parse_batch, ssh_hostspec, ssh_options
from deploy.checks.results import CheckReport, CheckResult, table
from deploy.checks.runner import PINS_FILE
from deploy.checks.tls import endpoint
from deploy.inventory.model import Host

PINS = {"dask": "2026.8.0", "numpy": "2.4.6", "pandas": "3.1.1"}


def _host(**changes) -> Host:
    values = dict(
        name="node1", address="10.0.0.5", connection="ssh", user=None, port=None, ssh_key=None,
        known_hosts=None, jump=None, groups=("workers",), runtime="native", workers=1, python=None,
    )  # fmt: skip
    return Host(**{**values, **changes})


# -- pins and versions ---------------------------------------------------


def test_pins_are_read_from_name_version_lines_only():
    text = (
        "# comment dask==1\n"
        "Dask==2026.8.0 \\\n    --hash=sha256:ab\n    # via numpy==9\n"
        "numpy==2.4.6 ; python_version >= '3.11'\n"
        "pandas[performance]==3.1.1 \\\n"
        "tornado>=6\n"
    )
    assert probes.read_pins(text) == PINS


def test_the_repository_pins_every_checked_package():
    assert set(probes.read_pins(PINS_FILE.read_text())) == set(probes.PACKAGES)


def test_versions_json_is_found_after_noise():
    output = "warning: something\n" + json.dumps({"dask": "2026.8.0", "pandas": None})
    assert probes.parse_versions(output) == {"dask": "2026.8.0", "pandas": None}
    with pytest.raises(ValueError, match="no versions"):
        probes.parse_versions("Traceback ...\nImportError: boom")


def test_a_mismatch_names_package_found_and_pinned():
    found = {"dask": "2026.8.0", "numpy": "2.4.5"}
    assert probes.version_mismatches(found, PINS) == [
        "numpy: found 2.4.5, pinned 2.4.6",
        "pandas: found not installed, pinned 3.1.1",
    ]
    assert probes.version_mismatches(dict(PINS), PINS) == []


def test_versions_judgement_names_the_host():
    bad = probes.judge_versions("node2", "/venv/bin/python", Section(0, json.dumps({**PINS, "numpy": "1.0"})), PINS)
    assert (bad.host, bad.ok) == ("node2", False) and "numpy: found 1.0, pinned 2.4.6" in bad.detail
    assert probes.judge_versions("node2", "py", Section(0, json.dumps(PINS)), PINS).ok
    broken = probes.judge_versions("node2", "/venv/bin/python", Section(127, "bash: line 3: /venv/bin/python: No such file"), PINS)
    assert not broken.ok and broken.detail == "/venv/bin/python failed: /venv/bin/python: No such file"


def test_the_versions_one_liner_is_valid_python():
    script = probes.versions_script("python3")
    assert script.startswith("python3 -c ")
    compile(script.split(" -c ", 1)[1].strip("'"), "<versions>", "exec")


# -- services, disk, slurm, shared folder ---------------------------------


@pytest.mark.parametrize(
    "output, ok, detail",
    [
        ("state=running pid=42 digest=x started=1 port:127.0.0.1:8786=open", True, "pid 42, 127.0.0.1:8786 open"),
        ("state=running pid=42 digest= started=", True, "pid 42"),
        ("state=running pid=42 port:127.0.0.1:8888=closed", False, "running but not answering: pid 42, 127.0.0.1:8888 closed"),
        ("state=stopped pid= port:127.0.0.1:8888=closed", False, "not running (127.0.0.1:8888 closed)"),
    ],
)
def test_services_are_judged_like_status(output, ok, detail):
    result = probes.judge_service("localhost", "jupyter", "jupyter", Section(0, output))
    assert (result.role, result.check, result.ok, result.detail) == ("jupyter", "service jupyter", ok, detail)


def test_a_stopped_service_is_shown_with_the_end_of_its_log(tmp_path):
    log = tmp_path / "log"
    log.write_text("starting\nconnect: scheduler=tls://10.0.0.1:8786 refused\nTimeoutError: no scheduler after 60 s\n")
    stopped = subprocess.run(["bash", "-c", probes.service_script("echo 'state=stopped pid='", str(log))], capture_output=True, text=True)
    result = probes.judge_service("node2", "workers", "workers", Section(stopped.returncode, stopped.stdout))
    assert (result.ok, result.detail) == (False, "not running; its log ends: TimeoutError: no scheduler after 60 s")
    running = subprocess.run(["bash", "-c", probes.service_script("echo 'state=running pid=7'", str(log))], capture_output=True, text=True)
    assert running.stdout == "state=running pid=7\n"  # a running service's log is not read
    failed = subprocess.run(["bash", "-c", probes.service_script("echo 'apptainer: not found'; exit 3", str(log))], capture_output=True, text=True)
    assert not probes.judge_service("node2", "workers", "workers", Section(failed.returncode, failed.stdout)).ok


def test_disk_needs_the_minimum_free():
    assert probes.judge_disk("h", "/srv", Section(0, f"{2 * 262144} 4096")).ok  # 2 GiB
    low = probes.judge_disk("h", "/srv", Section(0, "1000 4096"), min_free=1 << 30)
    assert not low.ok and "need at least 1.0 GiB" in low.detail
    assert not probes.judge_disk("h", "/srv", Section(1, "stat: cannot read")).ok


@pytest.mark.parametrize(
    "output, ok",
    [
        ("idle\n", True),
        ("mixed\ndown*\n", True),
        ("allocated-\n", True),
        ("idle~\ndrained\ndown*\n", False),
        ("idle*\n", False),
        ("", False),
    ],
)
def test_slurm_needs_a_usable_node(output, ok):
    assert probes.judge_slurm("login", Section(0, output)).ok is ok


def test_slurm_failure_says_why():
    result = probes.judge_slurm("login", Section(127, "bash: line 30: sinfo: command not found"))
    assert not result.ok and result.detail == "sinfo failed: sinfo: command not found"


def test_shared_folder_judgement():
    token = "t0k"
    good = shared.judge_shared("node1", "/srv/shared", Section(0, ""), {"node2": Section(0, token)}, token)
    assert good.ok and "node2" in good.detail
    missing = shared.judge_shared("desktop", "/srv/shared", None, {"node1": Section(1, "No such file"), "node2": Section(0, token)}, token)
    assert not missing.ok and missing.detail == "does not see the file of node1 in /srv/shared"
    unwritable = shared.judge_shared("node1", "/srv/shared", Section(1, "Permission denied"), {}, token)
    assert not unwritable.ok and unwritable.detail == "cannot write to /srv/shared: Permission denied"
    assert shared.marker_path("/srv/s", "lab", "a b", token) == "/srv/s/.toppipe-check.lab.a_b.t0k"


# -- batches and connections --------------------------------------------


def test_a_batch_runs_its_sections_concurrently_and_keeps_them_apart():
    sections = {"slow": "sleep 0.4; echo one", "fails": "echo two >&2; exit 3", "quiet": "sleep 0.4"}
    started = time.monotonic()
    out = subprocess.run(["bash", "-c", batch_script(sections, "TOKEN")], capture_output=True, text=True, check=True).stdout
    assert time.monotonic() - started < 0.75
    assert parse_batch(out, list(sections), "TOKEN") == {
        "slow": Section(0, "one"),
        "fails": Section(3, "two"),
        "quiet": Section(0, ""),
    }


def test_a_cut_short_batch_fails_the_missing_sections():
    found = parse_batch("TOKEN begin 0\nhello\nTOKEN end 0\nTOKEN begin 1\npartial", ["a", "b"], "TOKEN")
    assert found["a"] == Section(0, "hello") and not found["b"].ok


def test_ssh_hosts_get_strict_batch_options_and_one_master_each():
    host = _host(user="ana maria", port=2222, ssh_key="/k/id", known_hosts="/k/known hosts", jump="bastion")
    assert ssh_hostspec(host) == "ssh://ana%20maria@10.0.0.5:2222"
    assert ssh_hostspec(_host(address="fd00::5")) == "ssh://[fd00::5]"
    options = ssh_options(host, "/tmp/ctl/0")
    extra = options["ssh_extra_args"]
    assert "-o StrictHostKeyChecking=yes" in extra and "-o BatchMode=yes" in extra
    assert "-o UserKnownHostsFile='/k/known hosts'" in extra and "-o ProxyJump=bastion" in extra
    assert options["ssh_identity_file"] == "/k/id" and options["controlpath"] == "/tmp/ctl/0" and options["controlpersist"] > 0


def test_scheduler_endpoint_parsing():
    assert endpoint("tls://127.0.0.1:8786") == ("127.0.0.1", 8786)
    assert endpoint("tls://[fd00::1]:8786") == ("fd00::1", 8786)


# -- report ---------------------------------------------------------------


def test_report_summary_and_table():
    results = (
        CheckResult("localhost", "scheduler", "service scheduler", True, "pid 1"),
        CheckResult("node1", "jupyter", "service jupyter", False, "not running"),
        CheckResult("node1", "site", "free disk", True),
    )
    report = CheckReport(results)
    assert not report.ok and report.failed == (results[1],)
    assert report.summary() == "1 of 3 checks failed"
    assert CheckReport(results[:1]).summary() == "1 check passed"
    assert CheckReport((results[0], results[2])).summary() == "2 checks passed"
    assert not CheckReport(()).ok
    lines = table(results)
    assert lines[0].split() == ["host", "role", "check", "result", "detail"]
    assert lines[2].split() == ["node1", "jupyter", "service", "jupyter", "FAILED", "not", "running"]
    column = lines[0].index("result")
    assert [line[column:].split()[0] for line in lines[1:]] == ["ok", "FAILED", "ok"]  # aligned
    assert all(line == line.rstrip() for line in lines)
