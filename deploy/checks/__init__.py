"""Health checks of a deployed site, per host and role, over pytest-testinfra hosts.

:func:`run_checks` returns a :class:`CheckReport` of frozen
:class:`CheckResult` objects; it never prints. :func:`table` lays them out.
"""

from deploy.checks.probes import MIN_FREE_BYTES
from deploy.checks.results import CheckReport, CheckResult, table
from deploy.checks.runner import run_checks

__all__ = ["MIN_FREE_BYTES", "CheckReport", "CheckResult", "run_checks", "table"]
