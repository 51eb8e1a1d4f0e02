"""The site agent inside a Slurm allocation (``toppipe.agent.placement: allocation``).

For sites whose login nodes forbid long-running processes: the scheduler host only
submits. ``up`` writes what the agent reads to ``<shared>/<site>/agent``, where a
compute node finds it (its TLS pairs, dask settings, the record store's password
file, its configuration and job script), and keeps one job named
``toppipe-<site>-agent`` queued or running. The job's comment is the digest of what
it runs: a job of another digest is replaced once the new configuration passed the
agent's own check (``toppipe.agent_check``), and a job that ended is submitted again.

The agent listens on every address of its node (TLS with the site's certificates
only; its dashboard on the node's loopback) and publishes its address in
``scheduler.json`` beside its files: dask's scheduler file, which the client's
tunnel and the host workers follow. Before its walltime it submits its successor,
which starts once it has ended, and stops (see :mod:`toppipe.agent`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import shlex

import yaml

from deploy.inventory import Site
from deploy.resources import Directory, Ensure, File, Resource
from roles.base import HostContext
from roles.site import dask_config

#: What the agent's node receives of the scheduler host's files.
AGENT_FILES = ("tls/ca.pem", *(f"tls/{role}.{kind}" for role in ("scheduler", "worker", "client") for kind in ("pem", "key")), "secrets/pgpass", "secrets/redis_password")
#: The job script's lines that find Slurm's configuration on a node whose slurmd runs configless
#: (``--conf-server``: no slurm.conf in /etc/slurm, a cached copy under /run/slurm/conf), for the
#: agent's own sbatch calls; inside the image, that folder is bound in (``SLURM_CONF_OPTIONS``).
FIND_SLURM_CONF = (
    'if [ -z "${SLURM_CONF:-}" ] && [ ! -f /etc/slurm/slurm.conf ] && [ -f /run/slurm/conf/slurm.conf ]; then',
    '  SLURM_CONF=$(readlink -f /run/slurm/conf/slurm.conf); export SLURM_CONF',
    "fi",
    'slurm_conf=""; [ -n "${SLURM_CONF:-}" ] && slurm_conf="--bind $(dirname "$SLURM_CONF") --env SLURM_CONF=$SLURM_CONF"',
)
SLURM_CONF_OPTIONS = "$slurm_conf"
#: How long ``up`` waits for a submitted agent to publish its address, and for a replaced one to end.
START_SECONDS, END_SECONDS = 180, 60


def agent_root(site: Site) -> str:
    """The agent's folder on the shared filesystem."""
    return f"{site.settings.paths.shared}/{site.name}/agent"


def scheduler_file(site: Site) -> str:
    """Where the agent in an allocation publishes its address (dask's scheduler file)."""
    return f"{agent_root(site)}/scheduler.json"


def agent_log(site: Site) -> str:
    """The newest agent job's output (a link the job script makes to ``agent-<job id>.log``)."""
    return f"{agent_root(site)}/logs/agent.log"


def job_name(site: Site) -> str:
    return f"toppipe-{site.name}-agent"


def agent_context(ctx: HostContext) -> HostContext:
    """The scheduler host's context with the site's folder on the shared filesystem: the
    paths in the agent's configuration and dask settings, as the compute node reads them."""
    return dataclasses.replace(ctx, root=agent_root(ctx.site))


def job_script(ctx: HostContext, command: str) -> str:
    """The agent's batch script: one task on one node, its output beside its files."""
    site, agent = ctx.site, ctx.site.settings.agent
    root = agent_root(site)
    directives = [
        f"--job-name={job_name(site)}",
        f"--time={agent.walltime}",
        "--nodes=1", "--ntasks=1", "--cpus-per-task=1",
        f"--mem={_megabytes(agent.memory)}M",
        f"--output={root}/logs/agent-%j.log",
        f"--chdir={root}",
    ]  # fmt: skip
    partition, account = agent.partition or site.settings.slurm.partition, agent.account or site.settings.slurm.account
    directives += [f"--partition={partition}"] if partition else []
    directives += [f"--account={account}"] if account else []
    newest = f'ln -sfn "agent-$SLURM_JOB_ID.log" {shlex.quote(agent_log(site))}'  # what `deploy logs scheduler` reads
    lines = ["#!/bin/sh", *(f"#SBATCH {d}" for d in directives), newest, *FIND_SLURM_CONF, "exec " + command, ""]
    return "\n".join(lines)


def _megabytes(size: str) -> int:
    from dask.utils import parse_bytes

    return max(1, parse_bytes(size) // 2**20)


def resources(ctx: HostContext, config: dict, command: str, check: str) -> list[Resource]:
    """The agent's files on the shared filesystem and its job, queued or running with this digest."""
    actx = agent_context(ctx)
    root = actx.root
    files = {name: ctx.files[name] for name in AGENT_FILES if name in ctx.files}
    wanted: dict[str, tuple[bytes, bool]] = {name: (content, True) for name, content in files.items()}
    wanted["etc/dask/toppipe.yaml"] = (dask_config(actx), False)
    wanted["etc/agent.yaml"] = (yaml.safe_dump(config, sort_keys=True).encode(), False)
    script = job_script(ctx, command)
    wanted["agent.sbatch"] = (script.encode(), False)
    digest = hashlib.sha256(b"".join(n.encode() + c for n, (c, _) in sorted(wanted.items()))).hexdigest()[:16]
    found: list[Resource] = [Directory(root, 0o700), *(Directory(f"{root}/{d}", 0o700) for d in ("tls", "etc", "etc/dask", "secrets", "logs"))]
    found += [File(f"{root}/{name}", content, 0o600, secret=secret) for name, (content, secret) in sorted(wanted.items())]
    found.append(Ensure(f"agent job {job_name(ctx.site)} queued or running", check=job_check(ctx.site, digest), apply=job_apply(ctx.site, digest, check)))
    return found


def _jobs(site: Site, fields: str) -> str:
    return f'squeue -h -u "$(id -un)" -n {shlex.quote(job_name(site))} -t PENDING,RUNNING,CONFIGURING -o {fields}'


def job_check(site: Site, digest: str) -> str:
    """Holds when the site's agent jobs (one, or one and its successor) all carry *digest*."""
    return f'jobs=$({_jobs(site, "%k")}) && [ -n "$jobs" ] && [ -z "$(printf "%s\\n" "$jobs" | grep -vx {digest})" ]'


def _no_job_left(site: Site) -> str:
    """Shell that holds when the site has no agent job in any state squeue lists."""
    return f'[ -z "$(squeue -h -u "$(id -un)" -n {shlex.quote(job_name(site))} -o %i)" ]'


def _cancel_and_wait(site: Site) -> str:
    """Shell that cancels the site's agent jobs and waits (END_SECONDS at most) until none is left."""
    return (f'scancel -u "$(id -un)" -n {shlex.quote(job_name(site))}; i=0; until {_no_job_left(site)}; do i=$((i + 1)); '
            f"[ $i -le {END_SECONDS * 2} ] || {{ echo 'the previous agent job did not end within {END_SECONDS} s' >&2; exit 1; }}; sleep 0.5; done")  # fmt: skip


def job_apply(site: Site, digest: str, check: str) -> str:
    """Check the new configuration, end the agent's old job, submit the new one and wait for its address."""
    root, published = agent_root(site), shlex.quote(scheduler_file(site))
    return "\n".join([
        "set -e",
        check,
        _cancel_and_wait(site),
        f"rm -f {published}",
        f"job=$(sbatch --parsable --comment={digest} {shlex.quote(root + '/agent.sbatch')})",
        "job=${job%%;*}",
        f"i=0; until [ -s {published} ]; do",
        '  state=$(squeue -h -j "$job" -o %T 2>/dev/null || true)',
        '  case "$state" in PENDING|CONFIGURING|RUNNING) ;; *)',
        f'    echo "the agent job $job ended at start (${{state:-gone}}); its output: {root}/logs/agent-$job.log" >&2',
        f'    tail -n 5 "{root}/logs/agent-$job.log" >&2 || true; exit 1;; esac',
        f'  i=$((i + 1)); if [ $i -gt {START_SECONDS * 2} ]; then echo "agent job $job is $state; it publishes its address in {scheduler_file(site)} when it starts"; exit 0; fi',
        "  sleep 0.5",
        "done",
    ])  # fmt: skip


def down_resources(site: Site) -> list[Resource]:
    """No agent job left (the agent ends its worker jobs when it stops)."""
    return [
        Ensure(
            f"no agent job {job_name(site)} left",
            check=_no_job_left(site),
            apply=f"{_cancel_and_wait(site)}; rm -f {shlex.quote(scheduler_file(site))}",
        )
    ]
