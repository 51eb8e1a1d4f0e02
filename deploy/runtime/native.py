"""Services as supervised native processes: pid files, logs, no systemd.

Every process of a service carries ``TOPPIPE_SERVICE=<site>/<name>`` in its
environment, children included (dask worker processes, Jupyter kernels), so
stop and sweep find them all by reading ``/proc/*/environ``, even when a pid
file was lost. Scripts are bash, built here as strings and run by an engine
on the host; this module runs nothing.
"""

from __future__ import annotations

from deploy.resources import ServiceSpec
from deploy.runtime.base import Runtime, ServiceState
from deploy.runtime.shell import STOP_GRACE_SECONDS, open_log, probe_list, probe_ports, wait_until_ready  # noqa: F401
from deploy.runtime.shell import kill_marked as _kill_marked
from deploy.runtime.shell import q as _q


def _clean_shutdown(spec: ServiceSpec) -> str:
    """Bash running the service's own shutdown (``spec.stop_argv``) in its environment."""
    if not spec.stop_argv:
        return ""
    env = " ".join(f"{k}={_q(v)}" for k, v in spec.env)
    return f"( cd {_q(spec.workdir)} && env {env} {' '.join(_q(a) for a in spec.stop_argv)} ) </dev/null >/dev/null 2>&1 || true"


def _environment(spec: ServiceSpec, marked: bool = False) -> str:
    """Bash that reads the service's env file and execs ``env`` with its variables (and its marker)."""
    source = f"set -a; . {_q(spec.env_file)}; set +a; " if spec.env_file else ""
    marker = f"TOPPIPE_SERVICE={_q(spec.marker)} " if marked else ""
    env = "".join(f"{k}={_q(v)} " for k, v in spec.env)
    return f"{source}exec env {marker}{env}"


class NativeRuntime(Runtime):
    """Runs a service as a detached process group from the host's environment."""

    name = "native"

    def status_command(self, spec: ServiceSpec) -> str:
        probes = probe_list(spec.ports)
        return f"""
d={_q(spec.rundir)}
pid=$(cat "$d/pid" 2>/dev/null || true)
state=stopped
if [ -n "$pid" ] && grep -qzxF {_q('TOPPIPE_SERVICE=' + spec.marker)} /proc/$pid/environ 2>/dev/null; then
  state=running
fi
started=$(stat -c %Y "$d/pid" 2>/dev/null || true)
out="state=$state pid=$pid digest=$(cat "$d/digest" 2>/dev/null || true) started=$started kept=$(cat "$d/good/digest" 2>/dev/null || true)"
{probe_ports(probes)}
echo "$out"
"""

    def check_command(self, spec: ServiceSpec) -> str:
        return f"cd {_q(spec.workdir)} || exit 1; {_environment(spec)}{' '.join(_q(a) for a in spec.check_argv)}"

    def launch_command(self, spec: ServiceSpec) -> str:
        argv = " ".join(_q(a) for a in spec.argv)
        probes = probe_list(spec.ports)
        return f"""set -u
umask 077  # whatever the service writes is its owner's alone
d={_q(spec.rundir)}
mkdir -p "$d" && chmod 700 "$d"
{_kill_marked(spec.marker, fixed=True, grace=spec.stop_grace)}
rm -f "$d/pid" "$d/digest"
cd {_q(spec.workdir)}
{open_log()}
echo "--- $(date -u +%FT%TZ) starting {spec.name}" >> "$log"
( {_environment(spec, marked=True)}setsid {argv} ) </dev/null >>"$log" 2>&1 &
pid=$!
echo "$pid" > "$d/pid"; echo {_q(spec.digest())} > "$d/digest"
{wait_until_ready(spec.name, probes, spec.start_timeout, on_timeout=_kill_marked(spec.marker, fixed=True, grace=spec.stop_grace) + chr(10) + 'rm -f "$d/pid" "$d/digest"')}"""

    def stop_command(self, spec: ServiceSpec) -> str:
        return f"""set -u
d={_q(spec.rundir)}
{_clean_shutdown(spec)}
{_kill_marked(spec.marker, fixed=True, grace=spec.stop_grace)}
rm -f "$d/pid" "$d/digest"
"""

    def sweep_command(self, site: str) -> str:
        return "set -u\n" + _kill_marked(f"{site}/.*", fixed=False)

    def leftovers_command(self, site: str) -> str:
        return f"grep -lzxE {_q('TOPPIPE_SERVICE=' + site + '/.*')} /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3 | grep -vx $$ || true"

    def parse_status(self, output: str) -> ServiceState:
        return ServiceState.parse(output)
