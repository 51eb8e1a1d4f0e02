"""The roles a site is made of, in the order ``up`` applies them."""

from roles.base import HostContext, Role
from roles.jupyter import JupyterRole
from roles.pyenv import PythonEnvRole
from roles.records import RecordsRole
from roles.scheduler import SchedulerRole
from roles.site import SiteRole
from roles.workers import WorkersRole

#: ``up`` applies these in order; ``down`` stops them in reverse.
ROLES: tuple[Role, ...] = (SiteRole(), PythonEnvRole(), RecordsRole(), SchedulerRole(), WorkersRole(), JupyterRole())

__all__ = ["ROLES", "HostContext", "Role"]
