"""The deploy tool driven from Python: the notebook's up, down, services and logs,
and the dashboard's actions, through the same functions and journal as the CLI.

Every use of the deploy engine in a process happens on one thread: pyinfra runs
on gevent, whose child-process watchers (the local connector) work only on the
loop made first. Each call gets a fresh engine (hosts come and go) and turns
the deploy tool's errors into :class:`~toppipe.errors.ToppipeError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from toppipe.errors import ToppipeError

_DEPLOY_THREAD = ThreadPoolExecutor(1, thread_name_prefix="toppipe-deploy")

#: The ``running`` steps of each service action, in order.
SERVICE_STEPS = {"start": (True,), "stop": (False,), "restart": (False, True)}


@contextmanager
def _as_toppipe_errors():
    from deploy import DeployError
    from deploy.inventory import InventoryError

    try:
        yield
    except (DeployError, InventoryError) as exc:
        raise ToppipeError(str(exc)) from None


def on_deploy_thread(function: Callable, *args, **kwargs):
    """*function* run on the process's deploy thread, with a fresh engine as its first argument."""
    from deploy.engine import get_engine

    def run():
        with _as_toppipe_errors():
            engine = get_engine()
            try:
                return function(engine, *args, **kwargs)
            finally:
                engine.close()

    return _DEPLOY_THREAD.submit(run).result()


class SiteControl:
    """One site's deploy actions, by its inventory folder; *origin* is journaled with each command."""

    def __init__(self, inventory: str, origin: str):
        self.inventory, self.origin = str(inventory), origin

    def site(self):
        from deploy.inventory import load_site

        with _as_toppipe_errors():
            return load_site(self.inventory)

    # -- what runs ----------------------------------------------------------

    def states(self):
        """``(site, states, unreachable)`` as ``deploy status`` reads them."""
        from deploy import lifecycle

        def ask(engine):
            site = self.site()
            return (site, *lifecycle.status(engine, site))

        return on_deploy_thread(ask)

    def services(self):
        """``[(host, role, spec, state)]`` of every service of the site; state None where its host did not answer."""
        from deploy import lifecycle
        from deploy.state import site_files

        def ask(engine):
            site = self.site()
            found = lifecycle.services_by_role(site, lifecycle.contexts(engine, site, site_files(site)))
            states = engine.service_states(site, [(host, spec) for host, _, spec in found])
            return [(host, role, spec, states.get((host, spec.name))) for host, role, spec in found]

        return on_deploy_thread(ask)

    # -- commands -------------------------------------------------------------

    def service(self, verb: str, host: str, name: str) -> str:
        """Start, stop or restart one service as ``deploy`` would, journaled as ``<origin>-<verb>``."""
        return on_deploy_thread(self._service, verb, host, name)

    def _service(self, engine, verb: str, host: str, name: str) -> str:
        from deploy import lifecycle
        from deploy.engine import RunReport
        from deploy.journal import Journal
        from deploy.resources import Action, Service
        from deploy.state import site_files

        site = self.site()
        ctxs = lifecycle.contexts(engine, site, site_files(site))
        found = [(h, role, spec) for h, role, spec in lifecycle.services_by_role(site, ctxs) if h == host and spec.name == name]
        if not found:
            raise ToppipeError(f"no service {name} on {host}")
        journal = Journal.start(site, f"{self.origin}-{verb}", {"host": host, "service": name})
        report = RunReport([], {})
        for index, running in enumerate(SERVICE_STEPS[verb]):
            actions = [Action(h, role, Service(spec, running=running)) for h, role, spec in found]
            if index == 0:
                step = engine.apply(site, actions, journal.event)
            else:  # a fresh engine: pyinfra runs an operation once per engine
                with type(engine)() as again:
                    step = again.apply(site, actions, journal.event)
            report = RunReport(report.results + step.results, {**report.unreachable, **step.unreachable})
            if not step.ok:
                break
        journal.finish(0 if report.ok else 1, report)
        if not report.ok:
            failed = report.failed[0] if report.failed else None
            raise ToppipeError(f"{name} on {host}: {failed.message if failed else 'host unreachable'}")
        if verb == "restart":
            return f"{name} on {host} restarted"
        done, state = ("started", "running") if verb == "start" else ("stopped", "stopped")
        return f"{name} on {host} {done}" if report.changed else f"{name} on {host} was already {state}"

    def up(self, progress: Callable | None = None):
        """``deploy up`` (without its health checks), journaled as ``up``; the :class:`~deploy.lifecycle.UpResult`."""
        from deploy import DeployError, lifecycle
        from deploy.journal import Journal

        def run(engine):
            site = self.site()
            journal = Journal.start(site, "up", {"origin": self.origin})
            try:
                result = lifecycle.up(engine, site, _journaled(journal, progress))
            except DeployError as exc:
                journal.finish(exc.exit_code, None, str(exc))
                raise
            error = "" if result.report.ok else f"site {site.name} did not converge: {_why(result.report)}"
            journal.finish(0 if result.report.ok else 1, result.report, error)
            if error:
                raise ToppipeError(error)
            return result

        return on_deploy_thread(run)

    def down(self, progress: Callable | None = None, purge: bool = False):
        """``deploy down``, journaled as ``down``; the run's report."""
        from deploy import lifecycle
        from deploy.journal import Journal

        def run(engine):
            site = self.site()
            journal = Journal.start(site, "down", {"purge": purge, "origin": self.origin})
            report = lifecycle.down(engine, site, purge, _journaled(journal, progress))
            journal.finish(0 if report.ok else 1, report)
            if not report.ok:
                raise ToppipeError(f"site {site.name} is not fully down: {_why(report)}")
            return report

        return on_deploy_thread(run)

    # -- logs -----------------------------------------------------------------

    def log_target(self, target: str, workers=()):
        """``(site, LogTarget)`` that *target* names (see :func:`deploy.logs.resolve`)."""
        from deploy import logs

        def find(engine):
            site = self.site()
            return site, logs.locate(engine, site, target, workers)

        return on_deploy_thread(find)

    def read_log(self, target: str, lines: int, workers=()) -> str:
        from deploy import logs

        site, found = self.log_target(target, workers)
        with _as_toppipe_errors():
            return logs.read(site, found, lines)

    def follow_log(self, target: str, lines: int, workers=()) -> Iterator[str]:
        """The last *lines*, then each new line, until the iterator is closed (a bad *target* raises now)."""
        from deploy import logs

        site, found = self.log_target(target, workers)

        def lines_of():
            with _as_toppipe_errors():
                yield from logs.follow(site, found, lines)

        return lines_of()


def _journaled(journal, progress: Callable | None) -> Callable:
    def each(result) -> None:
        journal.event(result)
        if progress is not None:
            progress(result)

    return each


def _why(report) -> str:
    if report.failed:
        first = report.failed[0]
        return f"{first.action.host} {first.action.role}: {first.message}"
    if report.unreachable:
        return "; ".join(f"{host} unreachable ({why})" for host, why in report.unreachable.items())
    return "see the journal"
