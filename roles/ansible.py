"""Ansible-layout roles: ``roles/<name>/tasks/main.yml``, with defaults, templates and handlers.

A site lists them in ``toppipe.roles`` beside toppipe's own roles; the
Ansible engine runs them. ``tasks/down.yml`` and ``tasks/purge.yml``, where a
role has them, run at ``down`` and ``down --purge``. Roles are looked up in
the inventory's own ``roles/`` folder first, then in toppipe's.
"""

from __future__ import annotations

from pathlib import Path

from deploy import artifacts
from deploy.inventory import Host, Site
from deploy.resources import AnsibleTasks, Resource
from roles.base import HostContext, Role

REPO_ROLES = Path(__file__).resolve().parent


def task_file(folder: Path, name: str) -> Path | None:
    """``tasks/<name>.yml`` (or ``.yaml``) of the role in *folder*, if it has one."""
    for suffix in (".yml", ".yaml"):
        path = folder / "tasks" / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


def find_ansible_role(name: str, inventory_folder: Path) -> Path | None:
    """The folder of Ansible role *name*: the inventory's ``roles/<name>`` first, then toppipe's."""
    for base in (inventory_folder / "roles", REPO_ROLES):
        folder = base / name
        if task_file(folder, "main"):
            return folder.resolve()
    return None


class AnsibleRole(Role):
    """An Ansible role of the site, on the hosts (and groups) *hosts*; all hosts when empty."""

    group = "all"

    def __init__(self, name: str, folder: Path, hosts: tuple[str, ...] = ()):
        self.name, self.folder, self.hosts = name, folder, hosts

    def applies_to(self, site: Site, host: Host) -> bool:
        return not self.hosts or any(h in ("all", host.name) or h in host.groups for h in self.hosts)

    def variables(self, ctx: HostContext) -> tuple[tuple[str, object], ...]:
        """What toppipe tells the role about the site and this host (``toppipe_*`` variables)."""
        site, shared = ctx.site, ctx.site.settings.paths.shared
        return (
            ("toppipe_site", site.name),
            ("toppipe_root", ctx.root),
            ("toppipe_runtime", ctx.host.runtime),
            ("toppipe_shared_site", f"{shared}/{site.name}" if shared else ""),
            ("toppipe_versions", artifacts.versions()),
        )

    def _tasks(self, ctx: HostContext, which: str) -> list[Resource]:
        if not task_file(self.folder, which):
            return []
        return [AnsibleTasks(self.name, str(self.folder), which, self.variables(ctx))]

    def up(self, ctx: HostContext) -> list[Resource]:
        return self._tasks(ctx, "main")

    def down(self, ctx: HostContext) -> list[Resource]:
        return self._tasks(ctx, "down")

    def purge(self, ctx: HostContext) -> list[Resource]:
        return self._tasks(ctx, "purge")
