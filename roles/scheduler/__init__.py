"""The site agent: dask's scheduler (TLS only), its dashboard, and on Slurm sites
the SLURMCluster that submits worker jobs. A service on the scheduler host, or a
Slurm job submitted from it (``toppipe.agent.placement``, see :mod:`.allocation`)."""

from __future__ import annotations

import shlex

import yaml

from deploy.inventory.model import Pool
from deploy.resources import Absent, Ensure, File, Resource, Service, ServiceSpec
from roles.base import HostContext, Role
from roles.records import records_url, uses_postgres
from roles.scheduler import allocation
from toppipe.rotation import walltime_seconds


def agent_config(ctx: HostContext) -> dict:
    """What ``toppipe.agent`` reads: where to listen and, with Slurm, how to submit."""
    site, settings = ctx.site, ctx.site.settings
    if site.agent_in_allocation:  # paths as the compute node reads them; every address of the node (TLS only)
        ctx = allocation.agent_context(ctx)
    config = {
        "site": site.name,
        "host": "0.0.0.0" if site.agent_in_allocation else settings.bind if ctx.host.is_local else ctx.host.address,
        "port": settings.ports.scheduler,
        "dashboard": f"{settings.bind}:{settings.ports.dashboard}",
        "scheduler_file": ctx.path("scheduler.json"),
    }
    db = site.group("db")[0]
    if uses_postgres(site) or db.name == ctx.host.name:  # SQLite only where the agent can open it
        config["records"] = records_url(ctx)
    if "slurm" in ctx.host.groups and site.slurm_pools:
        shared = settings.paths.shared or ctx.root
        config["slurm"] = {"python": slurm_python(ctx), "job_name": f"toppipe-{site.name}", "workdir": f"{shared}/{site.name}/slurm"}
    config["pools"] = [pool_config(pool) for pool in site.pools if pool.kind == "hosts" or "slurm" in config]
    if site.agent_in_allocation:
        # the agent publishes the address through which its node reaches the scheduler host
        config["allocation"] = {"walltime": walltime_seconds(site.settings.agent.walltime), "script": ctx.path("agent.sbatch"),
                                "reach": site.scheduler_host.address}  # fmt: skip
    return config



def pool_config(pool: Pool) -> dict:
    """A pool as the agent reads it (:mod:`toppipe.agent_pools`)."""
    config = {"name": pool.name, "kind": pool.kind, "threads": pool.threads, "memory": pool.memory,
              "resources": dict(pool.resources)}  # fmt: skip
    if pool.kind == "hosts":
        return {**config, "hosts": {h: n for h, n in pool.hosts}, "workers": sum(n for _, n in pool.hosts)}
    return {**config, "partition": pool.partition, "account": pool.account, "qos": pool.qos, "walltime": pool.walltime,
            "cores": pool.cores, "processes": pool.processes, "gres": pool.gres, "constraint": pool.constraint,
            "job_directives": list(pool.job_directives), "local_scratch": pool.local_scratch, "max_jobs": pool.max_jobs}  # fmt: skip


#: What the agent needs from a Slurm host inside its container: the cluster's
#: configuration and munge's socket (sbatch authenticates through it).
SLURM_BINDS = ("/etc/slurm", "/run/munge")


#: What a Slurm worker sees of its job inside the compute image.
SLURM_JOB_VARIABLES = ("SLURM_JOB_ID", "SLURM_JOB_NAME", "SLURM_JOB_PARTITION", "SLURM_JOB_NODELIST", "SLURM_CPUS_ON_NODE", "SLURMD_NODENAME")


def slurm_python(ctx: HostContext) -> str:
    """The Python command of Slurm worker jobs: inside the compute image where the site runs containers."""
    if not ctx.in_containers:
        return ctx.python
    marker = (("TOPPIPE_SERVICE", f"{ctx.site.name}/slurm-worker"),)
    return ctx.exec_command("compute", [ctx.python], env=marker, passed=SLURM_JOB_VARIABLES, with_project=True)


class SchedulerRole(Role):
    name = "scheduler"
    group = "scheduler"

    def images(self, ctx: HostContext) -> tuple[str, ...]:
        return ("scheduler", "compute") if "slurm" in ctx.host.groups else ("scheduler",)

    def services(self, ctx: HostContext) -> list[ServiceSpec]:
        if ctx.site.agent_in_allocation:
            return []  # nothing of the site runs on the scheduler host
        config = agent_config(ctx)
        argv = [ctx.python, "-m", "toppipe.agent", ctx.path("etc", "agent.yaml")]
        dashboard_host, dashboard_port = config["dashboard"].rsplit(":", 1)
        ports = ((config["host"], config["port"]), (dashboard_host, int(dashboard_port)))
        # The config's digest is in the spec, so a changed config restarts the agent.
        env = (("TOPPIPE_AGENT_CONFIG", _digest(config)),)
        if "slurm" in config:
            # dask-jobqueue writes each job script to a temporary file: keep those on the shared filesystem.
            env += (("TMPDIR", f"{config['slurm']['workdir']}/scripts"),)
        binds = SLURM_BINDS if "slurm" in config else ()
        # before the running agent stops, the new configuration is checked by the agent's own code
        check = (ctx.python, "-m", "toppipe.agent_check", ctx.path("etc", "agent.yaml"))
        return [ctx.spec("scheduler", argv, image="scheduler", ports=ports, env=env, binds=binds,
                         check_argv=check, files=(ctx.path("etc", "agent.yaml"),))]  # fmt: skip

    def up(self, ctx: HostContext) -> list[Resource]:
        config = agent_config(ctx)
        resources: list[Resource] = [File(ctx.path("etc", "agent.yaml"), yaml.safe_dump(config, sort_keys=True).encode(), 0o600)]
        if "slurm" in config:
            # Shared filesystems often set setgid on folders, which chmod keeps:
            # check for the folder and its privacy, not for an exact mode.
            logs = shlex.quote(config["slurm"]["workdir"] + "/logs")
            scripts = shlex.quote(config["slurm"]["workdir"] + "/scripts")
            top = shlex.quote(config["slurm"]["workdir"].rsplit("/", 1)[0])
            resources.append(
                Ensure(
                    "Slurm work folder on the shared filesystem",
                    check=f'[ -d {logs} ] && [ -d {scripts} ] && [ "$(stat -c %a {top} | tail -c 4)" = "700" ]',
                    apply=f"mkdir -p {logs} {scripts} && chmod 700 {top}",
                )
            )
        if ctx.site.agent_in_allocation:
            return resources + allocation_resources(ctx, config)
        return resources + [Service(spec) for spec in self.services(ctx)]

    def down(self, ctx: HostContext) -> list[Resource]:
        resources = super().down(ctx)
        if ctx.site.agent_in_allocation:
            resources += allocation.down_resources(ctx.site)
        config = agent_config(ctx)
        if "slurm" in config:
            # The agent cancels its jobs when it stops; this catches jobs of an agent that died.
            name = shlex.quote(config["slurm"]["job_name"])
            resources.append(
                Ensure(
                    "no Slurm job of the site left",
                    check=f'[ -z "$(squeue -h -u "$(id -un)" -n {name} -o %i)" ]',
                    apply=f'scancel -u "$(id -un)" -n {name}',
                )
            )
        return resources


    def purge(self, ctx: HostContext) -> list[Resource]:
        """The site's folder on the shared filesystem (images, Slurm work folder, project copy), once."""
        shared = ctx.site.settings.paths.shared
        return [Absent(f"{shared}/{ctx.site.name}")] if shared else []


def allocation_resources(ctx: HostContext, config: dict) -> list[Resource]:
    """The agent as a Slurm job: its command runs in the scheduler image (or the site's Python) on
    the compute node, with Slurm's configuration bound in so that it submits the worker jobs."""
    actx = allocation.agent_context(ctx)
    env = (("TOPPIPE_SERVICE", f"{ctx.site.name}/agent"),)
    if "slurm" in config:
        env += (("TMPDIR", f"{config['slurm']['workdir']}/scripts"),)
    passed = ("SLURM_JOB_ID", "SLURM_JOB_NAME", "SLURMD_NODENAME")
    command = actx.exec_command("scheduler", [ctx.python, "-m", "toppipe.agent", actx.path("etc", "agent.yaml")],
                                binds=SLURM_BINDS, env=env, passed=passed, expanded=allocation.SLURM_CONF_OPTIONS)  # fmt: skip
    check = actx.exec_command("scheduler", [ctx.python, "-m", "toppipe.agent_check", actx.path("etc", "agent.yaml")], binds=SLURM_BINDS)
    return allocation.resources(ctx, config, command, check)


def _digest(config: dict) -> str:
    import hashlib

    return hashlib.sha256(yaml.safe_dump(config, sort_keys=True).encode()).hexdigest()[:12]
