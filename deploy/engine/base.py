"""The engine interface, implemented by pyinfra and by ansible-runner."""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from deploy.inventory import Site
from deploy.resources import Action, ServiceSpec
from deploy.runtime import ServiceState


class Outcome(enum.Enum):
    CHANGED = "changed"
    UNCHANGED = "unchanged"
    FAILED = "failed"
    SKIPPED = "skipped"  # the host failed earlier or could not be reached
    REFUSED = "refused"  # a service's new definition could not start: the previous one runs on


@dataclass(frozen=True)
class ActionResult:
    action: Action
    outcome: Outcome
    message: str = ""


@dataclass
class RunReport:
    """What a run did (or, for a plan, would do), action by action."""

    results: list[ActionResult] = field(default_factory=list)
    unreachable: dict[str, str] = field(default_factory=dict)

    def per_host(self) -> dict[str, dict[Outcome, int]]:
        table: dict[str, dict[Outcome, int]] = {}
        for result in self.results:
            row = table.setdefault(result.action.host, {o: 0 for o in Outcome})
            row[result.outcome] += 1
        return table

    @property
    def failed(self) -> list[ActionResult]:
        return [r for r in self.results if r.outcome is Outcome.FAILED]

    @property
    def refused(self) -> list[ActionResult]:
        return [r for r in self.results if r.outcome is Outcome.REFUSED]

    @property
    def changed(self) -> list[ActionResult]:
        return [r for r in self.results if r.outcome is Outcome.CHANGED]

    @property
    def ok(self) -> bool:
        return not self.unreachable and all(r.outcome in (Outcome.CHANGED, Outcome.UNCHANGED) for r in self.results)


#: Called as each action ends: (result). The engine never prints.
Progress = Callable[[ActionResult], None]

#: Why a host's later actions are not run once it failed.
FAILED_EARLIER = "not run: the host failed earlier in this run"


def in_turn(
    groups: list[list[Action]],
    run: Callable[[list[Action]], RunReport],
    progress: Progress | None = None,
    *,
    unreachable: dict[str, str] | None = None,
    stop_after_failure: bool = True,
) -> RunReport:
    """Run *groups* of actions one after another with *run*, into one report.

    A host in *unreachable* (known before the first group) is skipped in every
    group, as an engine skips the hosts it could not connect to. A host found
    unreachable by one group or, with *stop_after_failure*, failed in it is
    skipped in the groups after, each of its actions reported as it is passed over.
    """
    known = dict(unreachable or {})
    report = RunReport()
    stopped: dict[str, str] = {}
    for group in groups:
        todo = [a for a in group if a.host not in known and a.host not in stopped]
        part = run(todo) if todo else RunReport()
        report.results += part.results
        report.unreachable.update(part.unreachable)
        for action in group:
            if action.host in known:
                report.unreachable[action.host] = known[action.host]
                report.results.append(ActionResult(action, Outcome.SKIPPED, known[action.host]))
            elif action.host in stopped:
                result = ActionResult(action, Outcome.SKIPPED, stopped[action.host])
                report.results.append(result)
                if progress:
                    progress(result)
        stopped.update(part.unreachable)
        if stop_after_failure:
            stopped.update({r.action.host: FAILED_EARLIER for r in part.failed})
    return report


class Engine(abc.ABC):
    """Applies actions to a site's hosts and reads facts from them."""

    name: str

    def close(self) -> None:
        """Close connections kept open between calls (engines that keep none need not override)."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @abc.abstractmethod
    def apply(self, site: Site, actions: list[Action], progress: Progress | None = None) -> RunReport:
        """Bring every action's resource to its wanted state."""

    @abc.abstractmethod
    def plan(self, site: Site, actions: list[Action]) -> RunReport:
        """What :meth:`apply` would change; changes nothing."""

    @abc.abstractmethod
    def missing_files(self, site: Site, paths: dict[str, list[str]]) -> dict[str, list[str]]:
        """Of *paths* (per host), those that are not regular files there; unreachable hosts are left out."""

    @abc.abstractmethod
    def service_states(self, site: Site, services: list[tuple[str, ServiceSpec]]) -> dict[tuple[str, str], ServiceState]:
        """The observed state of each (host, service), keyed by (host, name)."""

    def unreachable(self, site: Site) -> dict[str, str]:
        """Hosts of *site* this engine could not reach, with why."""
        return {}

    def managed_paths(self, site: Site) -> dict[str, dict[str, list[dict]]]:
        """Per host and Ansible role run by :meth:`apply`, the paths its tasks manage there
        (see :func:`deploy.engine.ansible_engine.managed_paths`); engines without roles: none."""
        return {}

    def run_scripts(self, site: Site, scripts: dict[str, str]) -> dict[str, str] | None:
        """Run one bash script per host (all hosts side by side); the stdout of each that ran it
        to exit 0. None: this engine cannot, and its callers take the full path."""
        return None

    @abc.abstractmethod
    def home_dirs(self, site: Site) -> dict[str, str]:
        """The deploying user's home folder on each reachable remote host."""

    @abc.abstractmethod
    def leftovers(self, site: Site) -> dict[str, list[int]]:
        """Pids of the site's processes still running, per host."""
