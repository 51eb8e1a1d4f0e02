"""The roles a site is made of, in the order ``up`` applies them.

toppipe's own roles are Python (:class:`Role`, run by pyinfra); a site may
add Ansible-layout roles between them in ``toppipe.roles`` (run by
ansible-runner, :mod:`roles.ansible`).
"""

from __future__ import annotations

import difflib
from pathlib import Path

from deploy.inventory import Site
from deploy.inventory.model import RoleChoice
from roles.ansible import REPO_ROLES, AnsibleRole, find_ansible_role, task_file
from roles.base import HostContext, Role
from roles.dashboard import DashboardRole
from roles.jupyter import JupyterRole
from roles.lsyncd import LsyncdRole
from roles.postgres import PostgresRole
from roles.pyenv import PythonEnvRole
from roles.records import RecordsRole
from roles.redis import RedisRole
from roles.scheduler import SchedulerRole
from roles.site import SiteRole
from roles.tunnel import TunnelRole
from roles.workers import WorkersRole

#: toppipe's own roles: ``up`` applies them in this order; ``down`` stops them in reverse.
ROLES: tuple[Role, ...] = (
    SiteRole(),
    PythonEnvRole(),
    PostgresRole(),
    RedisRole(),
    RecordsRole(),
    SchedulerRole(),
    WorkersRole(),
    JupyterRole(),
    LsyncdRole(),
    DashboardRole(),
    TunnelRole(),
)
BUILTIN = {role.name: role for role in ROLES}


def site_roles(site: Site) -> tuple[Role, ...]:
    """The roles of *site* in order: its ``toppipe.roles`` list (checked when the inventory
    was loaded), else toppipe's own."""
    if not site.settings.roles:
        return ROLES
    folder = site.inventory.parent
    return tuple(
        BUILTIN.get(choice.role) or AnsibleRole(choice.role, find_ansible_role(choice.role, folder), choice.hosts)
        for choice in site.settings.roles
    )


def role_list_problems(choices: tuple[RoleChoice, ...], folder: Path, targets: set[str]) -> list[tuple[int, str]]:
    """What is wrong with a ``toppipe.roles`` list, as (index, problem): unknown or doubled
    roles, toppipe's roles missing or out of order, hosts that name no host or group."""
    problems: list[tuple[int, str]] = []
    order = list(BUILTIN)
    names = [c.role for c in choices]
    seen: dict[str, int] = {}
    for index, choice in enumerate(choices):
        name, on = choice.role, choice.hosts
        if name in seen:
            problems.append((index, f"role '{name}' is listed twice (first at [{seen[name]}]); list it once"))
        seen.setdefault(name, index)
        if name in BUILTIN:
            if on:
                problems.append((index, f"toppipe's role '{name}' picks its own hosts; remove 'hosts'"))
            continue
        if find_ansible_role(name, folder) is None:
            guess = difflib.get_close_matches(name, [*order, *_ansible_names(folder)], n=1, cutoff=0.6)
            fix = f"did you mean '{guess[0]}'?" if guess else f"add {folder / 'roles' / name / 'tasks' / 'main.yml'}"
            problems.append((index, f"no role '{name}': neither one of toppipe's ({', '.join(order)}) nor an Ansible role with tasks/main.yml; {fix}"))
        for target in on:
            if target != "all" and target not in targets:
                guess = difflib.get_close_matches(target, sorted(targets), n=1, cutoff=0.6)
                fix = f"did you mean '{guess[0]}'?" if guess else "name a host or group of hosts.yml"
                problems.append((index, f"hosts: '{target}' is neither a host nor a group; {fix}"))
    listed = [n for n in names if n in BUILTIN]
    for name in order:
        if name not in listed:
            problems.append((len(names), f"toppipe's role '{name}' is missing; list all of {', '.join(order)} in this order, with your roles between them"))
    ranks = [order.index(n) for n in dict.fromkeys(listed)]
    for earlier, later in zip(ranks, ranks[1:]):
        if later < earlier:
            problems.append((names.index(order[later]), f"'{order[later]}' must come before '{order[earlier]}': toppipe's roles keep the order {', '.join(order)}"))
            break
    return problems


def _ansible_names(folder: Path) -> list[str]:
    return [p.name for base in (folder / "roles", REPO_ROLES) if base.is_dir() for p in base.iterdir() if task_file(p, "main")]


__all__ = ["BUILTIN", "ROLES", "AnsibleRole", "HostContext", "Role", "role_list_problems", "site_roles"]
