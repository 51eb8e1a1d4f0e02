"""What every role is: a named piece of a site, applied to the hosts of a group.

A role speaks only in resources (:mod:`deploy.resources`); it never runs a
command. ``up`` lists the wanted state, ``down`` what stopping looks like,
``purge`` what ``down --purge`` removes, ``services`` what ``status`` checks,
``images`` which container images its services run on a host.
"""

from __future__ import annotations

import abc
import posixpath
import shlex
from dataclasses import dataclass, field

from deploy.artifacts import Artifact
from deploy.inventory import Host, Site
from deploy.resources import Resource, ServiceSpec

#: The Python inside toppipe's images (containers/compute.def).
IMAGE_PYTHON = "/opt/toppipe/venv/bin/python"


@dataclass(frozen=True)
class HostContext:
    """Everything a role may know about the host it is applied to.

    ``images`` maps image names to their paths on this host (empty unless the
    host runs the apptainer runtime); ``code`` is the folder holding toppipe's
    own code there (put on ``PYTHONPATH`` inside containers).
    """

    site: Site
    host: Host
    root: str
    python: str
    files: dict[str, bytes]
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    images: dict[str, str] = field(default_factory=dict)
    code: str = ""
    binds: tuple[str, ...] = ()

    def path(self, *parts: str) -> str:
        """A path under the site's folder on this host."""
        return posixpath.join(self.root, *parts)

    @property
    def in_containers(self) -> bool:
        return self.host.runtime == "apptainer"

    @property
    def dask_config_dir(self) -> str:
        return self.path("etc", "dask")

    @property
    def scheduler_address(self) -> str:
        host = self.site.scheduler_host
        bind = self.site.settings.bind if host.is_local else host.address
        return f"tls://{bind}:{self.site.settings.ports.scheduler}"

    def image(self, name: str) -> str | None:
        """The path of image *name* on this host; None where services run natively."""
        return self.images.get(name) if self.in_containers else None

    @property
    def project(self) -> str | None:
        """The user's project folder as this host sees it: the folder itself on the client,
        the copy lsyncd keeps on the shared filesystem elsewhere (None without one)."""
        if self.host.is_local:
            return str(self.site.project_dir)
        shared = self.site.settings.paths.shared
        return f"{shared}/{self.site.name}/project" if shared else None

    def container_env(self, with_project: bool = False) -> tuple[tuple[str, str], ...]:
        """What every process of the site needs in its environment: dask's settings, toppipe's
        code and, for processes that run the user's tasks (*with_project*), the user's project."""
        paths = [self.code] if self.in_containers and self.code else []
        if with_project and self.project:
            paths.append(self.project)
        env = (("DASK_CONFIG", self.dask_config_dir),)
        return env + ((("PYTHONPATH", ":".join(paths)),) if paths else ())

    def spec(self, name: str, argv: list[str], image: str | None = None, **kwargs) -> ServiceSpec:
        """A service spec with this host's run folder and dask configuration.

        On apptainer hosts it runs in *image* with the site's folders bound in.
        """
        env = (*self.container_env(kwargs.pop("with_project", False)), *kwargs.pop("env", ()))
        extra_binds = tuple(kwargs.pop("binds", ()))
        container = {}
        if image and self.in_containers:
            container = {"image": self.image(image), "binds": self.binds + extra_binds}
        return ServiceSpec(
            site=self.site.name,
            name=name,
            argv=tuple(argv),
            rundir=self.path("services", name),
            workdir=kwargs.pop("workdir", self.path("work")),
            env=env,
            **container,
            **kwargs,
        )

    def exec_command(
        self, image: str, argv: list[str], binds: tuple[str, ...] = (), env: tuple[tuple[str, str], ...] = (),
        passed: tuple[str, ...] = (), with_project: bool = False, expanded: str = "",
    ) -> str:
        """Shell for a one-off command with *env*: inside *image* on apptainer hosts, else as is.

        *passed* names variables of the calling shell handed into the container
        as they are when the command runs (a Slurm job's ``SLURM_JOB_ID``);
        *expanded* is apptainer options left for that shell to expand.
        """
        command = " ".join(shlex.quote(a) for a in argv)
        if not self.in_containers:
            return " ".join(["env", *(shlex.quote(f"{k}={v}") for k, v in env), command]) if env else command
        options = ["--cleanenv"] + [f"--env {shlex.quote(f'{k}={v}')}" for k, v in (*self.container_env(with_project), *env)]
        options += [f"--bind {shlex.quote(b)}" for b in self.binds + binds]
        options += [f'--env "{name}=${{{name}:-}}"' for name in passed]
        options += [expanded] if expanded else []
        app = '"$(command -v apptainer || command -v singularity)"'
        return f"{app} -s exec {' '.join(options)} {shlex.quote(self.image(image))} {command}"


class Role(abc.ABC):
    """A role of the site; subclasses set ``name`` and ``group``."""

    name: str
    group: str

    def applies_to(self, site: Site, host: Host) -> bool:
        return self.group == "all" or self.group in host.groups

    def images(self, ctx: HostContext) -> tuple[str, ...]:
        """The images this role runs on the host of *ctx* (when it runs containers)."""
        return ()

    @abc.abstractmethod
    def up(self, ctx: HostContext) -> list[Resource]: ...

    def services(self, ctx: HostContext) -> list[ServiceSpec]:
        return []

    def down(self, ctx: HostContext) -> list[Resource]:
        from deploy.resources import Service

        return [Service(spec, running=False) for spec in self.services(ctx)]

    def purge(self, ctx: HostContext) -> list[Resource]:
        return []
