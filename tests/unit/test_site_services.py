"""The notebook's service list (found by name or host/service) and its progress lines outside Jupyter."""

from __future__ import annotations

import pytest

from deploy.engine import ActionResult, Outcome
from deploy.resources import Action, Ensure
from toppipe.control import SiteControl
from toppipe.errors import ToppipeError
from toppipe.site_services import Progress, Services, SiteService

CONTROL = SiteControl("inventories/lab", origin="notebook")


def service(host: str, name: str, answering: bool = True) -> SiteService:
    return SiteService(host, name, name, running=True, answering=answering, control=CONTROL)


def test_a_service_is_found_by_name_when_alone_else_by_host():
    found = Services([service("login", "scheduler"), service("node1", "workers"), service("node2", "workers", answering=False)])
    assert found["scheduler"].host == "login"
    assert found["node2/workers"].health == "running, not answering"
    assert found[0].target == "login/scheduler"
    with pytest.raises(ToppipeError, match="'workers' names 2 services; use one of login/scheduler, node1/workers, node2/workers"):
        found["workers"]


def test_outside_jupyter_progress_prints_the_clis_lines(capsys):
    progress = Progress("down: site lab")
    progress(ActionResult(Action("node1", "workers", Ensure("workers stopped", "true", "true")), Outcome.CHANGED))
    progress(ActionResult(Action("node2", "workers", Ensure("workers stopped", "true", "true")), Outcome.UNCHANGED))
    progress.done("done")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "down: site lab" and lines[-1] == "done"
    assert len(lines) == 3 and "node1" in lines[1] and "workers stopped" in lines[1] and lines[1].endswith("changed")
    assert progress.printer.count == 2
