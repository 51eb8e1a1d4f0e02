"""A changed service replaces the running one only when it can start.

The decision (start, keep, stop, nothing) and the refusal line are pure and
tested as tables; the start script's check and fallback run for real with
bash on a tiny web service (the native runtime's scripts).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import urllib.request

import pytest

from deploy.resources import ServiceSpec
from deploy.runtime import NativeRuntime, ServiceState, Step, next_step, refusal
from tests.unit.test_native_runtime import bash, free_port
from toppipe import agent_check

RUNTIME = NativeRuntime()


def _state(text: str) -> ServiceState:
    return ServiceState.parse(text)


UP = "state=running pid=7 digest=new started=1 kept=new port:127.0.0.1:1=open"


@pytest.mark.parametrize(
    ("status", "running", "step"),
    [
        (UP, True, Step.NOTHING),  # runs as wanted and is the kept definition
        ("state=running pid=7 digest=new kept= port:127.0.0.1:1=open", True, Step.KEEP),  # started before fallbacks existed
        ("state=running pid=7 digest=new kept=old port:127.0.0.1:1=open", True, Step.KEEP),
        ("state=running pid=7 digest=old kept=old port:127.0.0.1:1=open", True, Step.START),  # a changed definition
        ("state=running pid=7 digest=new kept=new port:127.0.0.1:1=closed", True, Step.START),  # not answering
        ("state=stopped pid= digest= kept=new", True, Step.START),  # died
        (UP, False, Step.STOP),
        ("state=stopped pid= digest= kept=new", False, Step.NOTHING),
    ],
)
def test_next_step(status, running, step):
    assert next_step(_state(status), "new", running) is step


def test_refusal_reads_the_refused_line_only():
    assert refusal("noise\nREFUSED: the new definition failed its check (x)\n") == "the new definition failed its check (x)"
    assert refusal("started\n") is None and refusal("") is None


def test_check_and_kept_files_change_no_digest():
    spec = ServiceSpec(site="s", name="n", argv=("x",), rundir="/r", workdir="/w")
    assert dataclasses.replace(spec, check_argv=("true",), files=("/etc/x",)).digest() == spec.digest()


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"site": "s", "host": "h", "port": 1, "dashboard": "h:2"}, None),
        ({"site": "s", "host": "h", "dashboard": "h:2"}, "port: missing"),
        ({"site": "s", "host": "h", "port": "8786", "dashboard": "h:2"}, "port: '8786' is not a int"),
        ({"site": "s", "host": "h", "port": 1, "dashboard": "h:2", "slurm": {"job_name": "j"}}, "slurm.python: missing"),
        ({"site": "s", "host": "h", "port": 1, "dashboard": "h:2", "pools": [{"name": "p", "kind": "slurm", "threads": 1,
          "memory": "1GiB", "cores": 1}]}, "pools[0].walltime: missing"),  # fmt: skip
        (["not", "a", "mapping"], "not a mapping of settings"),
    ],
)
def test_agent_check_reads_keys_and_types(config, problem):
    found = agent_check.problems(config)
    assert (found[0] if found else None) == problem


def test_agent_check_refuses_an_address_that_is_not_this_hosts():
    assert agent_check.unbindable("127.0.0.1") is None
    assert "cannot listen on 192.0.2.7" in agent_check.unbindable("192.0.2.7")  # TEST-NET-1: never local


# -- the start script, for real -------------------------------------------


#: A web server that answers with the first line of its config file, and refuses to start on a "bad" one.
SERVER = """
import http.server, sys
text = open(sys.argv[1]).read().strip()
if text == "bad":
    sys.exit("config: 'bad' is not a setting")
class Reply(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(text.encode())
http.server.HTTPServer(("127.0.0.1", int(sys.argv[2])), Reply).serve_forever()
"""


@pytest.fixture
def web(tmp_path):
    """A spec of the tiny service, its config file holding 'v1'."""
    port = free_port()
    config = tmp_path / "web.conf"
    config.write_text("v1\n")
    spec = ServiceSpec(
        site="fallback-test", name="web", argv=(sys.executable, "-c", SERVER, str(config), str(port)),
        rundir=str(tmp_path / "svc"), workdir=str(tmp_path), ports=(("127.0.0.1", port),), start_timeout=20,
        files=(str(config),),
    )  # fmt: skip
    yield spec
    bash(RUNTIME.sweep_command("fallback-test"))


def answer(spec: ServiceSpec) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{spec.ports[0][1]}/", timeout=5) as reply:
        return reply.read().decode()


def status(spec: ServiceSpec) -> ServiceState:
    return RUNTIME.parse_status(bash(RUNTIME.status_command(spec)).stdout)


def start(spec: ServiceSpec) -> subprocess.CompletedProcess:
    return bash(RUNTIME.start_command(spec))


def changed(spec: ServiceSpec, **fields) -> ServiceSpec:
    """*spec* with a changed definition (another environment variable: a new digest)."""
    return dataclasses.replace(spec, env=(("CHANGE", "2"),), **fields)


def test_a_started_definition_is_kept_with_its_files(web, tmp_path):
    assert start(web).returncode == 0
    assert status(web).kept == web.digest() and answer(web) == "v1"
    assert (tmp_path / "svc" / "good" / "files" / "0").read_text() == "v1\n"


def test_a_failed_check_stops_nothing_and_puts_the_config_back(web, tmp_path):
    assert start(web).returncode == 0
    before = status(web).pid
    (tmp_path / "web.conf").write_text("v2\n")  # what up wrote for the new definition
    check = ("sh", "-c", "echo 'v2: unknown setting' >&2; exit 1")
    result = start(changed(web, check_argv=check))
    assert result.returncode == 0, result.stderr
    assert refusal(result.stdout) == "the new definition failed its check (v2: unknown setting); the running web was left as it is"
    assert status(web).pid == before and answer(web) == "v1"
    assert (tmp_path / "web.conf").read_text() == "v1\n"


def test_with_nothing_running_the_check_is_not_waited_for(web, tmp_path):
    """A first start has nothing to protect: the service starts at once and refuses a bad definition itself."""
    marker = tmp_path / "checked"
    result = start(dataclasses.replace(web, check_argv=("sh", "-c", f"touch {marker}; exit 1")))
    assert result.returncode == 0 and refusal(result.stdout) is None, result.stdout + result.stderr
    assert answer(web) == "v1" and not marker.exists()
    bash(RUNTIME.stop_command(web))
    (tmp_path / "web.conf").write_text("bad\n")
    result = start(changed(web, check_argv=("true",)))  # the service's own refusal, then the kept definition
    why = refusal(result.stdout)
    assert why is not None and "'bad' is not a setting" in why and why.endswith("the previous definition of web was started again"), result.stdout
    assert answer(web) == "v1"


def test_a_passing_check_lets_the_new_definition_in(web, tmp_path):
    assert start(web).returncode == 0
    (tmp_path / "web.conf").write_text("v2\n")
    new = changed(web, check_argv=("true",))
    result = start(new)
    assert result.returncode == 0 and refusal(result.stdout) is None, result.stdout + result.stderr
    assert answer(web) == "v2" and status(web).kept == new.digest()


def test_a_new_definition_that_dies_at_start_gives_way_to_the_previous_one(web, tmp_path):
    assert start(web).returncode == 0
    (tmp_path / "web.conf").write_text("bad\n")
    result = start(changed(web))
    assert result.returncode == 0, result.stderr
    why = refusal(result.stdout)
    assert why is not None and "web exited while starting" in why and "'bad' is not a setting" in why, result.stdout
    assert why.endswith("the previous definition of web was started again")
    assert answer(web) == "v1" and (tmp_path / "web.conf").read_text() == "v1\n"
    assert status(web).digest == web.digest() == status(web).kept  # the next up with the change reverted: nothing to do
    assert next_step(status(web), web.digest(), True) is Step.NOTHING


def test_a_new_definition_that_never_answers_gives_way_too(web):
    assert start(web).returncode == 0
    silent = changed(web, argv=(sys.executable, "-c", "import time; time.sleep(600)"), start_timeout=2)
    result = start(silent)
    why = refusal(result.stdout)
    assert why is not None and "did not answer" in why and "within 2 s, so it was stopped)" in why, result.stdout + result.stderr
    assert answer(web) == "v1" and status(web).digest == web.digest()


def test_without_a_kept_definition_a_failed_start_is_a_plain_failure(web, tmp_path):
    (tmp_path / "web.conf").write_text("bad\n")
    result = start(web)
    assert result.returncode == 1 and refusal(result.stdout) is None
    assert "'bad' is not a setting" in result.stderr


def test_when_the_previous_definition_fails_too_it_says_so(web, tmp_path):
    assert start(web).returncode == 0
    (tmp_path / "svc" / "good" / "files" / "0").write_text("bad\n")  # the kept config no longer starts either
    (tmp_path / "web.conf").write_text("bad\n")
    result = start(changed(web))
    assert result.returncode == 1 and refusal(result.stdout) is None
    assert "the new definition did not start" in result.stderr and "nor did the previous one" in result.stderr


def test_keep_records_a_running_definition_without_restarting_it(web, tmp_path):
    assert start(web).returncode == 0
    before = status(web).pid
    bash(f"rm -rf {tmp_path / 'svc' / 'good'}")  # as a service started before fallbacks existed
    assert next_step(status(web), web.digest(), True) is Step.KEEP
    assert bash(RUNTIME.keep_command(web)).returncode == 0
    after = status(web)
    assert after.pid == before and after.kept == web.digest()
    assert next_step(after, web.digest(), True) is Step.NOTHING
