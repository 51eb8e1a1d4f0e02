"""What each per-host check runs (shell) and how its output is judged (pure)."""

from __future__ import annotations

import json
import re
import shlex
from importlib import metadata

from deploy import host_shell
from deploy.pins import REQUIREMENT, normalize
from deploy.checks.hosts import Section, last_line
from deploy.checks.results import CheckResult
from deploy.logs import tail_command
from deploy.runtime import ServiceState
from deploy.runtime.apptainer import instance_name, parse_instance_list

#: Packages whose versions must be the pinned ones on the client, the scheduler host and the worker hosts.
PACKAGES = ("dask", "distributed", "cloudpickle", "msgpack", "tornado", "numpy", "pandas")
#: Free space the site's folder on each host needs.
MIN_FREE_BYTES = 1 << 30
#: Slurm node states in which a node can run (or is running) jobs.
USABLE_SLURM_STATES = frozenset({"idle", "mixed", "allocated"})
#: sinfo flags after a state: not responding (*), powered off (~), powering down (%), pending power down (!).
UNAVAILABLE_SLURM_FLAGS = frozenset("*~%!")
SLURM_SCRIPT = "sinfo -h -o '%T'"

#: ``{name: version or None}`` of PACKAGES installed, as Python over ``m`` (importlib.metadata):
#: text, for a host's Python to print (_VERSIONS_CODE), or for this process to evaluate.
_VERSIONS_EXPR = f"{{n: getattr(next(iter(m.distributions(name=n)), None), 'version', None) for n in {list(PACKAGES)!r}}}"
_VERSIONS_CODE = f"import json, importlib.metadata as m; print(json.dumps({_VERSIONS_EXPR}))"
_PIN = re.compile(REQUIREMENT.pattern, re.MULTILINE)  # a pin file's name==version lines


def _gib(size: float) -> str:
    return f"{size / (1 << 30):.1f} GiB"


# -- services ------------------------------------------------------------


#: How a service check's output marks the lines of the service's log (shown when it is not running).
LOG_PREFIX = "log| "
#: How much of a stopped service's last log line a check shows.
LOG_LINE_CHARS = 200


def service_script(status: str, log: str) -> str:
    """The service's status command, then, when it is not running, the end of its *log*: why it stopped."""
    return (f"status=$(\n{status}\n)\nrc=$?\necho \"$status\"\n"
            f"case \"$status\" in *state=running*) ;; *) {tail_command(log, 3)} 2>/dev/null | sed 's/^/{LOG_PREFIX}/' ;; esac\n"
            "exit $rc")


def judge_service(host: str, role: str, name: str, section: Section) -> CheckResult:
    """A service is healthy when its process runs and every port answers, as ``status`` judges it;
    one that does not run is shown with the last line of its log."""
    check = f"service {name}"
    lines = section.output.splitlines()
    status = "\n".join(line for line in lines if not line.startswith(LOG_PREFIX))
    logged = [text for line in lines if line.startswith(LOG_PREFIX) and (text := line.removeprefix(LOG_PREFIX).strip())]
    if not section.ok:
        return CheckResult(host, role, check, False, f"status command failed: {last_line(status)}")
    state = ServiceState.parse(status)
    ports = ", ".join(f"{hp} {'open' if up else 'closed'}" for hp, up in state.ports)
    if not state.running:
        why = f"; its log ends: {logged[-1][:LOG_LINE_CHARS]}" if logged else ""
        return CheckResult(host, role, check, False, "not running" + (f" ({ports})" if ports else "") + why)
    detail = f"pid {state.pid}" + (f", {ports}" if ports else "")
    return CheckResult(host, role, check, state.answering, detail if state.answering else f"running but not answering: {detail}")


# -- versions ------------------------------------------------------------


def versions_script(python: str, ctx=None, image: str | None = None) -> str:
    """The versions one-liner, inside *image* where the host of *ctx* runs containers.

    From the client image (``scripts/toppipe``'s relay), the desktop's services' Python is the
    environment this process runs in: its versions are read here, instead of starting another
    container only to print them (a tenth of a second of every ``up``)."""
    if ctx is not None and image and ctx.in_containers:
        return ctx.exec_command(image, [python, "-c", _VERSIONS_CODE])
    if python == host_shell.CLIENT_PYTHON and host_shell.relayed():
        found = eval(_VERSIONS_EXPR, {"m": metadata})  # our own constant, never input
        return f"printf '%s\\n' {shlex.quote(json.dumps(found))}"
    return f"{shlex.quote(python)} -c {shlex.quote(_VERSIONS_CODE)}"


def read_pins(text: str, names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """``name -> version`` of *names* from a requirements file's ``name==version`` lines."""
    found = {normalize(m.group(1)): m.group(3) for m in _PIN.finditer(text)}
    return {name: found[name] for name in names if name in found}


def parse_versions(output: str) -> dict[str, str | None]:
    """The JSON line the versions one-liner prints (``None``: not installed); ValueError without one."""
    for line in reversed(output.splitlines()):
        if line.startswith("{"):
            found = json.loads(line)
            if isinstance(found, dict):
                return {str(k): (str(v) if v is not None else None) for k, v in found.items()}
    raise ValueError(f"no versions in the output: {last_line(output)}")


def version_mismatches(found: dict[str, str | None], pins: dict[str, str]) -> list[str]:
    """One phrase per package whose version is not the pinned one."""
    return [
        f"{name}: found {found.get(name) or 'not installed'}, pinned {pinned}"
        for name, pinned in pins.items()
        if found.get(name) != pinned
    ]


def judge_versions(host: str, python: str, section: Section, pins: dict[str, str]) -> CheckResult:
    check = "pinned versions"
    if not section.ok:
        return CheckResult(host, "site", check, False, f"{python} failed: {last_line(section.output)}")
    try:
        found = parse_versions(section.output)
    except ValueError as exc:
        return CheckResult(host, "site", check, False, str(exc))
    wrong = version_mismatches(found, pins)
    if wrong:
        return CheckResult(host, "site", check, False, "; ".join(wrong))
    return CheckResult(host, "site", check, True, f"{len(pins)} packages as pinned (dask {pins.get('dask', '?')})")


# -- images --------------------------------------------------------------


def judge_images(host: str, site: str, section: Section, specs) -> CheckResult:
    """Each container service runs in its instance, from the image of the current inputs;
    the detail names each image and its digest (``compute-<digest>.sif``)."""
    check = "images"
    try:
        running = {i.name: i.image for i in parse_instance_list(section.output)}
    except ValueError as exc:
        return CheckResult(host, "site", check, False, str(exc))
    problems, seen = [], []
    for spec in (s for s in specs if s.image):
        name = instance_name(site, spec.name)
        found = running.get(name)
        if found is None:
            problems.append(f"{spec.name}: no instance {name}")
        elif found != spec.image:
            problems.append(f"{spec.name}: runs {found.rsplit('/', 1)[-1]}, expected {spec.image.rsplit('/', 1)[-1]} (run up)")
        else:
            seen.append(f"{spec.name} {found.rsplit('/', 1)[-1].removesuffix('.sif')}")
    if problems:
        return CheckResult(host, "site", check, False, "; ".join(problems))
    return CheckResult(host, "site", check, True, ", ".join(seen))


# -- disk ----------------------------------------------------------------


def disk_script(root: str) -> str:
    """Free bytes on the filesystem of *root* (or of its nearest existing parent)."""
    return f'p={shlex.quote(root)}; while [ ! -e "$p" ]; do p=$(dirname "$p"); done; stat -f -c "%a %S" "$p"'


def judge_disk(host: str, root: str, section: Section, min_free: int = MIN_FREE_BYTES) -> CheckResult:
    check = "free disk"
    try:
        blocks, size = map(int, section.output.split()[-2:])
    except ValueError:
        return CheckResult(host, "site", check, False, f"cannot read free space of {root}: {last_line(section.output)}")
    free = blocks * size
    detail = f"{_gib(free)} free under {root}"
    if free < min_free:
        return CheckResult(host, "site", check, False, f"{detail}, need at least {_gib(min_free)}")
    return CheckResult(host, "site", check, True, detail)


# -- slurm ---------------------------------------------------------------


def slurm_states(output: str) -> list[str]:
    """The node states sinfo lists, each with its flag characters (``idle~``, ``down*``)."""
    return sorted({line.strip().lower() for line in output.splitlines() if line.strip()})


def usable_slurm_state(state: str) -> bool:
    """Idle, mixed or allocated, and not flagged as not responding or powered (going) off."""
    base = re.sub(r"[^a-z]+$", "", state)
    return base in USABLE_SLURM_STATES and not set(state[len(base):]) & UNAVAILABLE_SLURM_FLAGS


def judge_slurm(host: str, section: Section) -> CheckResult:
    check = "slurm nodes"
    if not section.ok:
        return CheckResult(host, "slurm", check, False, f"sinfo failed: {last_line(section.output)}")
    states = slurm_states(section.output)
    detail = "node states: " + (", ".join(states) or "none")
    usable = any(usable_slurm_state(state) for state in states)
    return CheckResult(host, "slurm", check, usable, detail if usable else f"no idle, mixed or allocated node; {detail}")


def agent_job_script(name: str) -> str:
    """The site agent's Slurm jobs (placement ``allocation``): ``id state node`` a line."""
    return f'squeue -h -u "$(id -un)" -n {shlex.quote(name)} -o "%i %T %N"'


def judge_agent_job(host: str, section: Section) -> CheckResult:
    """One of the agent's jobs runs (a successor may wait behind it)."""
    check = "agent job running"
    if not section.ok:
        return CheckResult(host, "scheduler", check, False, f"squeue failed: {last_line(section.output)}")
    jobs = [line.split() for line in section.output.splitlines() if line.strip()]
    running = [job for job in jobs if len(job) == 3 and job[1] == "RUNNING"]
    if running:
        return CheckResult(host, "scheduler", check, True, f"job {running[0][0]} on {running[0][2]}")
    listed = ", ".join(f"{job[0]} {job[1].lower()}" for job in jobs if len(job) >= 2)
    return CheckResult(host, "scheduler", check, False, f"no agent job runs ({listed or 'none queued'}); python -m deploy up submits one")
