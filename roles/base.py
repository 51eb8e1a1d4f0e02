"""What every role is: a named piece of a site, applied to the hosts of a group.

A role speaks only in resources (:mod:`deploy.resources`); it never runs a
command. ``up`` lists the wanted state, ``down`` what stopping looks like,
``purge`` what ``down --purge`` removes, ``services`` what ``status`` checks.
"""

from __future__ import annotations

import abc
import posixpath
from dataclasses import dataclass, field

from deploy.artifacts import Artifact
from deploy.inventory import Host, Site
from deploy.resources import Resource, ServiceSpec


@dataclass(frozen=True)
class HostContext:
    """Everything a role may know about the host it is applied to."""

    site: Site
    host: Host
    root: str
    python: str
    files: dict[str, bytes]
    artifacts: dict[str, Artifact] = field(default_factory=dict)

    def path(self, *parts: str) -> str:
        """A path under the site's folder on this host."""
        return posixpath.join(self.root, *parts)

    @property
    def dask_config_dir(self) -> str:
        return self.path("etc", "dask")

    @property
    def scheduler_address(self) -> str:
        host = self.site.scheduler_host
        bind = self.site.settings.bind if host.is_local else host.address
        return f"tls://{bind}:{self.site.settings.ports.scheduler}"

    def spec(self, name: str, argv: list[str], **kwargs) -> ServiceSpec:
        """A service spec with this host's run folder and dask configuration."""
        env = (("DASK_CONFIG", self.dask_config_dir), *kwargs.pop("env", ()))
        return ServiceSpec(
            site=self.site.name,
            name=name,
            argv=tuple(argv),
            rundir=self.path("services", name),
            workdir=kwargs.pop("workdir", self.path("work")),
            env=env,
            **kwargs,
        )


class Role(abc.ABC):
    """A role of the site; subclasses set ``name`` and ``group``."""

    name: str
    group: str

    def applies_to(self, site: Site, host: Host) -> bool:
        return self.group == "all" or self.group in host.groups

    @abc.abstractmethod
    def up(self, ctx: HostContext) -> list[Resource]: ...

    def services(self, ctx: HostContext) -> list[ServiceSpec]:
        return []

    def down(self, ctx: HostContext) -> list[Resource]:
        from deploy.resources import Service

        return [Service(spec, running=False) for spec in self.services(ctx)]

    def purge(self, ctx: HostContext) -> list[Resource]:
        return []
