"""toppipe's code on remote hosts and, where they run services natively, the
pinned Python environment from the client's wheelhouse.

Hosts need no route out: the wheels and toppipe's code arrive as two tars,
sent only when their hash changes, and the venv is rebuilt only then. Hosts
running containers get the code only: the images hold the environment.
"""

from __future__ import annotations

import shlex

from deploy.inventory import Host, Site
from deploy.resources import Ensure, Resource, Upload
from roles.base import HostContext, Role


class PythonEnvRole(Role):
    name = "pyenv"
    group = "all"

    def applies_to(self, site: Site, host: Host) -> bool:
        return not host.is_local

    def up(self, ctx: HostContext) -> list[Resource]:
        source = ctx.artifacts["source"]
        root = shlex.quote(ctx.root)
        unpack = f"set -e; cd {root}; rm -rf lib; mkdir lib; tar -xf source.tar -C lib; echo {source.digest} > lib/.digest"
        code = [
            Upload(str(source.path), ctx.path("source.tar")),
            Ensure("toppipe code", f'[ "$(cat {root}/lib/.digest 2>/dev/null)" = {source.digest} ]', unpack),
        ]
        if ctx.in_containers:
            return code
        wheels = ctx.artifacts["wheelhouse"]
        venv = f"{root}/venv"
        stamp = f"{venv}/.toppipe-wheels"
        build = (
            f"set -e; cd {root}; rm -rf venv wheels.tmp; mkdir wheels.tmp; tar -xf wheelhouse.tar -C wheels.tmp; "
            f"python3 -m venv venv; venv/bin/pip install --quiet --disable-pip-version-check --no-index --no-deps "
            f"--require-hashes --find-links wheels.tmp/wheels -r wheels.tmp/pins/scheduler.txt -r wheels.tmp/pins/worker.txt; "
            f'echo "$PWD/lib" > "$(venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()[\'purelib\'])")/toppipe.pth"; '
            f"rm -rf wheels.tmp; echo {wheels.digest} > {stamp}"
        )
        return [
            Upload(str(wheels.path), ctx.path("wheelhouse.tar")),
            Ensure("python environment (pinned wheels)", f'[ "$(cat {stamp} 2>/dev/null)" = {wheels.digest} ]', build),
            *code,
        ]
