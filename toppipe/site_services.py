"""The notebook's view of a site's servers: live progress of up and down, and
each service with its health, start/stop/restart and logs (see :mod:`toppipe.control`)."""

from __future__ import annotations

import html
from dataclasses import dataclass, field

from toppipe.control import SiteControl


class Progress:
    """The deploy's progress lines (the CLI's, see :class:`deploy.display.ProgressPrinter`), in an
    HTML widget that updates in place inside Jupyter, printed elsewhere; also the action count."""

    def __init__(self, title: str):
        from deploy.display import ProgressPrinter

        self.title, self.lines, self.widget = title, [], _widget()
        self.printer = ProgressPrinter(write=self._write if self.widget is not None else None)
        if self.widget is not None:
            from IPython.display import display

            display(self.widget)
            self._show()
        else:
            print(title, flush=True)

    def __call__(self, result) -> None:
        self.printer(result)
        if self.widget is not None:
            self._show()

    def done(self, outcome: str) -> None:
        if self.widget is not None:
            self.title = f"{self.title}: {outcome}"
            self._show()
        else:
            print(outcome, flush=True)

    def _write(self, line: str) -> None:
        self.lines.append(line)

    def _show(self) -> None:
        body = html.escape("\n".join(self.lines[-40:]))
        self.widget.value = f"<b>{html.escape(self.title)}</b> ({self.printer.count} actions)<pre>{body}</pre>"


def _widget():
    """An ipywidgets HTML widget when running in a Jupyter kernel, else None."""
    try:
        from IPython import get_ipython

        if get_ipython() is None or not hasattr(get_ipython(), "kernel"):
            return None
        import ipywidgets
    except ImportError:
        return None
    return ipywidgets.HTML()


@dataclass(frozen=True)
class SiteService:
    """One service on one host, with its health when it was listed."""

    host: str
    name: str
    role: str
    running: bool
    answering: bool
    control: SiteControl = field(repr=False, compare=False)
    session: object = field(default=None, repr=False, compare=False)

    @property
    def target(self) -> str:
        return f"{self.host}/{self.name}"

    def start(self) -> str:
        """Start it as ``deploy up`` would (journaled); one line saying what happened."""
        return self.control.service("start", self.host, self.name)

    def stop(self) -> str:
        return self.control.service("stop", self.host, self.name)

    def restart(self) -> str:
        return self.control.service("restart", self.host, self.name)

    def logs(self, tail: int = 50, follow: bool = False):
        """Its last *tail* log lines as text, or (*follow*) an iterator of lines that goes on."""
        if follow:
            return self.control.follow_log(self.target, tail)
        return self.control.read_log(self.target, tail)

    @property
    def health(self) -> str:
        return "answering" if self.answering else ("running, not answering" if self.running else "stopped")


class Services(list):
    """The services of a site (a list of :class:`SiteService`), shown as a table in Jupyter."""

    def __getitem__(self, key):
        if isinstance(key, str):  # "scheduler" or "node1/workers"
            found = [s for s in self if key in (s.name, s.target)]
            if len(found) != 1:
                from toppipe.errors import ToppipeError

                names = ", ".join(s.target for s in self)
                raise ToppipeError(f"{key!r} names {len(found)} services; use one of {names}")
            return found[0]
        return super().__getitem__(key)

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(s.host)}</td><td>{html.escape(s.name)}</td><td>{html.escape(s.health)}</td></tr>" for s in self
        )
        return f"<table><tr><th>host</th><th>service</th><th>health</th></tr>{rows}</table>"


def services(control: SiteControl, session=None) -> Services:
    """Every service of the site on every host, with its health read from the hosts now."""
    found = Services()
    for host, role, spec, state in control.services():
        found.append(
            SiteService(host, spec.name, role, bool(state and state.running), bool(state and state.answering), control, session)
        )
    return found
