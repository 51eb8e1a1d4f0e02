"""The roles a site is made of, in the order ``up`` applies them."""

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
from roles.workers import WorkersRole

#: ``up`` applies these in order; ``down`` stops them in reverse.
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
)

__all__ = ["ROLES", "HostContext", "Role"]
