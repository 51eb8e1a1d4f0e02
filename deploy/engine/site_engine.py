"""The engine ``deploy`` uses: pyinfra for toppipe's resources, ansible-runner for Ansible roles.

A site's role list may mix both kinds. Actions run in their order, cut into
runs of one engine each; a host that failed or could not be reached in one
run is skipped in the runs after it, as within one engine. Facts come from
pyinfra, whose connections stay open between calls.
"""

from __future__ import annotations

from deploy.engine.base import Engine, Progress, RunReport, in_turn
from deploy.inventory import Site
from deploy.resources import Action, AnsibleTasks, ServiceSpec
from deploy.runtime import ServiceState


def _kind(action: Action) -> str:
    """The engine for *action*: ansible-runner for Ansible roles, pyinfra for the rest."""
    return "ansible" if isinstance(action.resource, AnsibleTasks) else "pyinfra"


def segments(actions: list[Action]) -> list[tuple[str, list[Action]]]:
    """*actions* cut into consecutive runs for one engine each: ("ansible" | "pyinfra", actions)."""
    found: list[tuple[str, list[Action]]] = []
    for action in actions:
        kind = _kind(action)
        if found and found[-1][0] == kind:
            found[-1][1].append(action)
        else:
            found.append((kind, [action]))
    return found


class SiteEngine(Engine):
    """Routes each action to the engine for its kind of resource."""

    name = "site"

    def __init__(self) -> None:
        from deploy.engine.pyinfra_engine import PyinfraEngine

        self.pyinfra = PyinfraEngine()
        self._ansible: Engine | None = None

    @property
    def ansible(self) -> Engine:
        """The Ansible engine, imported on first use (ansible-runner is slow to import)."""
        if self._ansible is None:
            from deploy.engine.ansible_engine import AnsibleEngine

            self._ansible = AnsibleEngine()
        return self._ansible

    def close(self) -> None:
        self.pyinfra.close()
        if self._ansible is not None:
            self._ansible.close()

    def unreachable(self, site: Site) -> dict[str, str]:
        found = self.pyinfra.unreachable(site)
        if self._ansible is not None:
            found = {**self._ansible.unreachable(site), **found}
        return found

    def apply(self, site: Site, actions: list[Action], progress: Progress | None = None) -> RunReport:
        return self._segmented(site, actions, progress, plan=False)

    def plan(self, site: Site, actions: list[Action]) -> RunReport:
        return self._segmented(site, actions, None, plan=True)

    def _segmented(self, site: Site, actions: list[Action], progress: Progress | None, plan: bool) -> RunReport:
        def run(segment: list[Action]) -> RunReport:
            engine = self.ansible if _kind(segment[0]) == "ansible" else self.pyinfra
            return engine.plan(site, segment) if plan else engine.apply(site, segment, progress)

        return in_turn(
            [segment for _, segment in segments(actions)], run, progress,
            unreachable=self.pyinfra.unreachable(site), stop_after_failure=not plan,
        )  # fmt: skip

    # -- facts: pyinfra's ------------------------------------------------

    def missing_files(self, site: Site, paths: dict[str, list[str]]) -> dict[str, list[str]]:
        return self.pyinfra.missing_files(site, paths)

    def service_states(self, site: Site, services: list[tuple[str, ServiceSpec]]) -> dict[tuple[str, str], ServiceState]:
        return self.pyinfra.service_states(site, services)

    def home_dirs(self, site: Site) -> dict[str, str]:
        return self.pyinfra.home_dirs(site)

    def managed_paths(self, site: Site) -> dict[str, dict[str, list[dict]]]:
        return self._ansible.managed_paths(site) if self._ansible is not None else {}

    def run_scripts(self, site: Site, scripts: dict[str, str]) -> dict[str, str] | None:
        return self.pyinfra.run_scripts(site, scripts)

    def leftovers(self, site: Site) -> dict[str, list[int]]:
        return self.pyinfra.leftovers(site)
