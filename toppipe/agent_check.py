"""``python -m toppipe.agent_check CONFIG``: could the site agent start with this configuration?

``up`` runs it in the agent's own environment (its Python, image, binds and
variables) before it stops the running agent: a configuration the agent
cannot start with is refused, and the running agent stays. It reads and
imports what the agent reads and imports, and builds its Slurm job script,
without listening on anything or submitting a job. Exit 0 when all holds,
else one line saying what does not, exit 1.
"""

from __future__ import annotations

import shutil
import socket
import sys
from typing import Any

#: Keys the agent reads, with their types.
REQUIRED = {"site": str, "host": str, "port": int, "dashboard": str}
SLURM_REQUIRED = {"python": str, "job_name": str, "workdir": str}
POOL_REQUIRED = {"name": str, "kind": str, "threads": int, "memory": str}
SLURM_POOL_REQUIRED = {"walltime": str, "cores": int}


def problems(config: Any) -> list[str]:
    """What in *config* the agent would not accept (pure: keys and types only)."""
    if not isinstance(config, dict):
        return ["not a mapping of settings"]
    found = _missing(config, REQUIRED, "")
    if "slurm" in config:
        slurm = config["slurm"]
        found += _missing(slurm, SLURM_REQUIRED, "slurm.") if isinstance(slurm, dict) else ["slurm: not a mapping"]
    pools = config.get("pools", [])
    if not isinstance(pools, list) or not all(isinstance(p, dict) for p in pools):
        return [*found, "pools: not a list of mappings"]
    for i, pool in enumerate(pools):
        found += _missing(pool, POOL_REQUIRED, f"pools[{i}].")
        if pool.get("kind") == "slurm":
            found += _missing(pool, SLURM_POOL_REQUIRED, f"pools[{i}].")
    return found


def _missing(mapping: dict, wanted: dict[str, type], prefix: str) -> list[str]:
    found = []
    for key, kind in wanted.items():
        if key not in mapping:
            found.append(f"{prefix}{key}: missing")
        elif not isinstance(mapping[key], kind) or isinstance(mapping[key], bool):
            found.append(f"{prefix}{key}: {mapping[key]!r} is not a {kind.__name__}")
    return found


def unbindable(host: str) -> str | None:
    """Why this host cannot listen on *host* (an address that is not its own), or None."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.bind((host, 0))
    except OSError as error:
        return f"cannot listen on {host}: {error.strerror or error}"
    return None


def check(config: dict) -> str | None:
    """The first reason the agent could not start with *config*, or None."""
    found = problems(config)
    if found:
        return "; ".join(found)
    import toppipe.agent  # noqa: F401  (the agent's own imports: distributed, yaml, ...)

    if config.get("records"):
        import toppipe.recorder  # noqa: F401
    for address in (config["host"], config["dashboard"].rsplit(":", 1)[0]):
        if why := unbindable(address):
            return why
    if "slurm" in config:
        from dask_jobqueue.slurm import SLURMJob

        from toppipe.agent import slurm_pools
        from toppipe.agent_pools import slurm_job_options

        for pool in slurm_pools(config):
            try:
                options = slurm_job_options({}, pool, config["slurm"], config["site"])
                SLURMJob(scheduler=f"tls://{config['host']}:{config['port']}", name="check", **options).job_script()
            except (ValueError, TypeError) as error:
                return f"pool {pool['name']}: the job script cannot be built: {error}"
        if shutil.which("sbatch") is None:
            return "slurm: sbatch is not on the agent's PATH"
    return None


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m toppipe.agent_check CONFIG.yaml", file=sys.stderr)
        return 2
    try:
        import yaml

        with open(argv[0]) as handle:
            try:
                config = yaml.safe_load(handle)
            except yaml.YAMLError as error:
                raise ValueError(str(error).replace("\n", " ")) from None
        why = check(config)
    except ImportError as error:
        why = f"{sys.executable} cannot import {error.name or error}; the agent needs the site's Python environment (toppipe_python)"
    except (OSError, ValueError) as error:
        why = f"cannot be read: {error}"
    if why:
        print(f"{argv[0]}: {why}", file=sys.stderr)
        return 1
    return 0

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
