"""Services as Apptainer instances: one instance per service, the service exec'd into it.

How a long-running service runs
-------------------------------
``start_command`` does, on the host::

    cd WORKDIR; apptainer instance start --cleanenv --env .. --env-file .. --bind .. IMAGE <site>.<service>
    setsid apptainer exec --cleanenv --env TOPPIPE_SERVICE=<site>/<service> --env .. --env-file .. \\
        --pwd WORKDIR instance://<site>.<service> ARGV..   (detached, output to RUNDIR/log)

rather than ``apptainer instance run IMAGE NAME ARGV..``. Reasons:

* any image works: ``instance run`` needs a ``%runscript`` that execs its
  arguments, ``exec`` needs nothing from the image, so the argv of the spec is
  run as is (the same argv as the native runtime);
* the service's output goes to ``RUNDIR/log`` like native's, not to
  apptainer's per-user log folder (``~/.apptainer/instances/logs/..``), and
  the start script sees the service die: ``$!`` is the ``apptainer exec``
  process, which lives exactly as long as the service, so a service that
  exits while starting fails the start with the tail of its log;
* the conventions of the native runtime hold: the service and every child
  carry ``TOPPIPE_SERVICE=<site>/<service>`` (passed with ``--env``, so it
  survives ``--cleanenv``), ``RUNDIR/pid`` holds the pid of the service's
  first marked process (apptainer's own host-side processes scrub their
  environment, so they carry no marker), ``RUNDIR/digest`` the spec's digest;
  ``sweep``/``leftovers`` find processes by the marker as native does;
* ``instance run`` is a late addition (Apptainer 1.1) that older Singularity
  releases lack; ``instance start`` + ``exec instance://`` are in every
  version of both.

A service is *running* when the instance is listed by ``apptainer instance
list --json`` **and** the pid in ``RUNDIR/pid`` still carries the marker. A
service that died leaves an idle instance behind: it reads as stopped, and the
next start stops that instance before starting a new one. The instance's own
logs (those of an image's ``%startscript``) stay where apptainer puts them;
``RUNDIR/instance.out`` and ``RUNDIR/instance.err`` link to them.

Instance names are ``<site>.<service>`` with every character apptainer
refuses (it allows ``A-Za-z0-9._-``) turned into ``_``. ``sweep_command(site)``
stops every instance named ``<site>.*``; site names hold no dot, so ``lab``
never sweeps ``lab-two``.

apptainer or singularity
------------------------
The generated bash uses ``apptainer``, else ``singularity`` (SingularityCE or
Singularity 3.x) where only that is installed, found at run time with
``command -v``. The commands used are common to both: ``instance start``,
``instance stop [-F]``, ``instance list --json [NAME|GLOB]``, ``exec
instance://``, ``--cleanenv``, ``--env``, ``--env-file`` (since Singularity 3.6),
``--pwd``, ``--bind``, the global ``-s`` (silent). Where they differ:

* ``instance start`` takes no ``--pwd`` in either (the instance starts in
  the current folder, so the script changes to the work folder first); ``exec``
  takes ``--pwd`` in both (Apptainer >= 1.1 also calls it ``--cwd``);
* ``--env`` / ``--env-file`` are missing from Singularity < 3.6 (which only
  knows ``SINGULARITYENV_*`` variables): such hosts are not supported;
* per-user state and instance logs live under ``~/.apptainer`` versus
  ``~/.singularity``; neither is read here except through ``instance list``;
* Apptainer 1.x starts instances in their own PID namespace, so ``instance
  stop`` also ends processes exec'd into it; SingularityCE without ``--pid``
  may not. Stop and sweep therefore always also kill the marked processes;
* ``instance list --json`` has the keys ``instance``, ``pid``, ``img`` in
  both; older releases may lack ``ip``, ``logErrPath``, ``logOutPath``, so
  the parser takes them as optional.

What is stated here of Apptainer was checked on the lab's Apptainer 1.4.5;
what is said of SingularityCE and older Singularity releases is untested here.

Like the native runtime, this module runs nothing: it builds bash that an
engine runs on the host.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from deploy.resources import ServiceSpec
from deploy.runtime.base import Runtime, ServiceState
from deploy.runtime.shell import kill_marked, marked_pids, open_log, probe_list, probe_ports, q, wait_until_ready

#: Characters apptainer accepts in an instance name.
_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9._-]")

#: Bash that sets ``$app`` to the apptainer (or singularity) command, or to nothing.
FIND_APPTAINER = "app=$(command -v apptainer || command -v singularity || true)"

#: Bash functions over ``instance list --json`` (its output is one key a line in both tools).
_LIST_FUNCTIONS = r"""instance_json() {  # instance list --json for a name or a glob; an empty list without apptainer
  if [ -n "$app" ]; then "$app" -s instance list --json "$1" 2>/dev/null || true
  else echo '{"instances": []}'; fi
}
instance_names() { instance_json "$1" | sed -n 's/^[[:space:]]*"instance":[[:space:]]*"\([^"]*\)".*/\1/p'; }
instance_pids() { instance_json "$1" | sed -n 's/^[[:space:]]*"pid":[[:space:]]*\([0-9][0-9]*\).*/\1/p'; }
stop_instances() {  # stop every instance matching $1 (a name or a glob)
  for n in $(instance_names "$1"); do
    "$app" -s instance stop "$n" >/dev/null 2>&1 || "$app" -s instance stop -F "$n" >/dev/null 2>&1 || true
  done
}"""


#: In the start script's wait: stop the instance when the service died while starting.
_STOP_ON_EXIT = 'stop_instances "$inst"; rm -f "$d/pid"'
#: In the start script's wait: the service's own pid (the first marked process) replaces apptainer's.
_FIND_SERVICE_PID = """  if [ -z "$found" ]; then
    found=$(service_pid)
    [ -n "$found" ] && echo "$found" > "$d/pid"
  fi"""


def _clean_shutdown(spec: ServiceSpec) -> str:
    """Bash running the service's own shutdown (``spec.stop_argv``) in its instance, if it runs."""
    if not spec.stop_argv:
        return ""
    argv = " ".join(q(a) for a in spec.stop_argv)
    return f'[ -n "$(instance_names "$inst")" ] && "$app" -s exec instance://"$inst" {argv} </dev/null >/dev/null 2>&1 || true'


def _options(spec: ServiceSpec, marked: bool) -> str:
    """``--cleanenv`` and the service's variables (and marker) as apptainer options."""
    options = ["--cleanenv"] + ([f"--env {q('TOPPIPE_SERVICE=' + spec.marker)}"] if marked else [])
    options += [f"--env {q(f'{k}={v}')}" for k, v in spec.env]
    if spec.env_file:
        options.append(f"--env-file {q(spec.env_file)}")
    return " ".join(options)


def _binds(spec: ServiceSpec) -> str:
    return " ".join(f"--bind {q(b)}" for b in spec.binds)


def instance_name(site: str, service: str) -> str:
    """The instance name of *service* of *site*: ``<site>.<service>``, in apptainer's characters.

    Site names cannot hold a dot, so one site's instances never match another's glob.
    """
    return _NOT_ALLOWED.sub("_", f"{site}.{service}")


def _site_glob(site: str) -> str:
    return _NOT_ALLOWED.sub("_", site) + ".*"


@dataclass(frozen=True)
class Instance:
    """One line of ``apptainer instance list --json``."""

    name: str
    pid: int | None
    image: str
    ip: str = ""
    log_out: str | None = None
    log_err: str | None = None


def instance_list_command(pattern: str = "*") -> str:
    """A fact: ``instance list --json`` for *pattern* (a name or a glob), read by :func:`parse_instance_list`.

    Prints an empty list where neither apptainer nor singularity is installed.
    """
    return f"{FIND_APPTAINER}\n{_LIST_FUNCTIONS}\ninstance_json {q(pattern)}\n"


def parse_instance_list(text: str) -> list[Instance]:
    """The instances in the output of ``apptainer instance list --json`` (also singularity's)."""
    text = text.strip()
    if not text:
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"not the output of 'apptainer instance list --json': {error}") from None
    entries = data.get("instances") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ValueError("not the output of 'apptainer instance list --json': no 'instances' list")
    instances = []
    for entry in entries:
        pid = entry.get("pid")
        instances.append(
            Instance(
                name=str(entry["instance"]),
                pid=int(pid) if pid not in (None, "", 0) else None,
                image=str(entry.get("img") or ""),
                ip=str(entry.get("ip") or ""),
                log_out=entry.get("logOutPath") or None,
                log_err=entry.get("logErrPath") or None,
            )
        )
    return instances


class ApptainerRuntime(Runtime):
    """Runs each service inside its own Apptainer instance of ``spec.image``."""

    name = "apptainer"

    def instance_list_command(self, site: str | None = None) -> str:
        """The ``instance list --json`` fact, for the instances of *site* (all when None)."""
        return instance_list_command(_site_glob(site) if site else "*")

    def status_command(self, spec: ServiceSpec) -> str:
        marker = q("TOPPIPE_SERVICE=" + spec.marker)
        return f"""
{FIND_APPTAINER}
{_LIST_FUNCTIONS}
d={q(spec.rundir)}
inst={q(instance_name(spec.site, spec.name))}
pid=$(cat "$d/pid" 2>/dev/null || true)
state=stopped
if [ -n "$pid" ] && grep -qzxF {marker} /proc/$pid/environ 2>/dev/null && instance_names "$inst" | grep -qxF "$inst"; then
  state=running
fi
started=$(stat -c %Y "$d/pid" 2>/dev/null || true)
out="state=$state pid=$pid digest=$(cat "$d/digest" 2>/dev/null || true) started=$started kept=$(cat "$d/good/digest" 2>/dev/null || true)"
{probe_ports(probe_list(spec.ports))}
echo "$out"
"""

    def check_command(self, spec: ServiceSpec) -> str:
        """``spec.check_argv`` in a fresh container of the new image (not the running instance), unmarked."""
        if not spec.image:
            return f"echo {q(spec.name + ': no image to check')} >&2; exit 1"
        argv = " ".join(q(a) for a in spec.check_argv)
        return f"""{FIND_APPTAINER}
[ -n "$app" ] || {{ echo "neither apptainer nor singularity is installed on $(hostname)" >&2; exit 1; }}
cd {q(spec.workdir)} || exit 1
exec "$app" -s exec {_options(spec, marked=False)} {_binds(spec)} --pwd {q(spec.workdir)} {q(spec.image)} {argv}"""

    def launch_command(self, spec: ServiceSpec) -> str:
        if not spec.image:  # fails where it runs, with the reason, so that plans and `down` still work
            why = f"{spec.name}: no image to run; the apptainer runtime needs the service's image (ServiceSpec.image)"
            return f"echo {q(why)} >&2; exit 1\n"
        image = spec.image
        marker = q("TOPPIPE_SERVICE=" + spec.marker)
        opts = _options(spec, marked=True)
        binds = _binds(spec)
        pwd = f"--pwd {q(spec.workdir)}"
        argv = " ".join(q(a) for a in spec.argv)
        probes = probe_list(spec.ports)
        return f"""set -u
umask 077  # whatever the service writes is its owner's alone
{FIND_APPTAINER}
[ -n "$app" ] || {{ echo "{spec.name}: neither apptainer nor singularity is installed on $(hostname)" >&2; exit 1; }}
{_LIST_FUNCTIONS}
service_pid() {{  # the first process with the marker whose parent has none: the service itself
  for p in $({marked_pids(spec.marker, fixed=True)} || true); do
    pp=$(awk '/^PPid:/ {{print $2}}' /proc/$p/status 2>/dev/null) || continue
    grep -qzxF {marker} /proc/$pp/environ 2>/dev/null || {{ echo "$p"; return 0; }}
  done
}}
d={q(spec.rundir)}
inst={q(instance_name(spec.site, spec.name))}
image={q(image)}
mkdir -p "$d" && chmod 700 "$d"
{_clean_shutdown(spec)}
stop_instances "$inst"
{kill_marked(spec.marker, fixed=True, grace=spec.stop_grace)}
rm -f "$d/pid" "$d/digest"
[ -r "$image" ] || {{ echo "{spec.name}: no image $image on $(hostname)" >&2; exit 1; }}
cd {q(spec.workdir)}
{open_log()}
echo "--- $(date -u +%FT%TZ) starting {spec.name} in instance $inst of $image ($app)" >> "$log"
if ! "$app" -s instance start {opts} {binds} "$image" "$inst" </dev/null >>"$log" 2>&1; then
  echo "{spec.name}: instance $inst did not start; last lines of $log:" >&2; tail -n 15 "$log" >&2; exit 1
fi
json=$(instance_json "$inst")
for kind in Out Err; do
  path=$(printf '%s\\n' "$json" | sed -n "s/^[[:space:]]*\\"log${{kind}}Path\\":[[:space:]]*\\"\\([^\\"]*\\)\\".*/\\1/p")
  [ -n "$path" ] && ln -sfn "$path" "$d/instance.$(echo "$kind" | tr OE oe)"
done
( exec setsid "$app" -s exec {opts} {pwd} instance://"$inst" {argv} ) </dev/null >>"$log" 2>&1 &
pid=$!
echo "$pid" > "$d/pid"; echo {q(spec.digest())} > "$d/digest"
found=""
{wait_until_ready(spec.name, probes, spec.start_timeout, on_exit=_STOP_ON_EXIT, each_step=_FIND_SERVICE_PID,
                  guard='[ -n "$found" ] && ', on_timeout=_STOP_ON_EXIT + chr(10) + kill_marked(spec.marker, fixed=True, grace=spec.stop_grace))}"""

    def stop_command(self, spec: ServiceSpec) -> str:
        return f"""set -u
{FIND_APPTAINER}
{_LIST_FUNCTIONS}
d={q(spec.rundir)}
inst={q(instance_name(spec.site, spec.name))}
{_clean_shutdown(spec)}
stop_instances "$inst"
{kill_marked(spec.marker, fixed=True, grace=spec.stop_grace)}
rm -f "$d/pid" "$d/digest"
"""

    def sweep_command(self, site: str) -> str:
        return f"""set -u
{FIND_APPTAINER}
{_LIST_FUNCTIONS}
stop_instances {q(_site_glob(site))}
{kill_marked(f"{site}/.*", fixed=False)}
"""

    def leftovers_command(self, site: str) -> str:
        return f"""{FIND_APPTAINER}
{_LIST_FUNCTIONS}
{{ {marked_pids(f"{site}/.*", fixed=False)}; instance_pids {q(_site_glob(site))}; }} | sort -un || true
"""

    def parse_status(self, output: str) -> ServiceState:
        return ServiceState.parse(output)
