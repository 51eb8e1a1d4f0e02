"""toppipe: a session on a deployed site, from a notebook or a script.

    import toppipe
    session = toppipe.connect("local")      # a site name or an inventory path
    session.client.submit(sum, [1, 2]).result()
    session.store.incr("seen")              # the site's Redis (toppipe.store() inside a task)
    session.fs.ls("results")                # the site's shared folder
    session = toppipe.up("inventories/local")   # python -m deploy up, from Python (live progress)
    session.services()["workers"].restart()     # each service: start/stop/restart/logs, journaled
    session.logs("scheduler", tail=20)          # or "node1/workers", a worker, a Slurm job id

Importing this package is cheap; dask is imported by :func:`connect`.
"""

from toppipe.errors import NotDeployedError, ToppipeError

__all__ = ["NotDeployedError", "ToppipeError", "connect", "store", "up"]


def connect(site: str = "local", *, timeout: float | None = None):
    """A :class:`toppipe.session.Session` on *site* (a name or an inventory folder)."""
    from toppipe.session import Session

    return Session.open(site, timeout=timeout)


def store(**options):
    """Inside a task: a ``redis.Redis`` on the site's Redis, as the worker's dask configuration
    says (see :mod:`toppipe.site_store`); *options* go to ``redis.Redis``. In the notebook use ``session.store``."""
    import dask.config

    from toppipe import site_store

    return site_store.connect(site_store.from_config(dask.config.get("toppipe.store", None)), **options)


def up(inventory: str, *, timeout: float | None = None):
    """Bring the site of *inventory* up as ``python -m deploy up`` does (journaled, live progress
    in Jupyter) and return a :class:`toppipe.session.Session` on it."""
    from deploy.display import changes_made
    from toppipe.control import SiteControl
    from toppipe.session import Session
    from toppipe.site_services import Progress

    control = SiteControl(inventory, origin="notebook")
    progress = Progress(f"up: site from {inventory}")
    try:
        result = control.up(progress)
    except ToppipeError as exc:
        progress.done(f"failed: {exc}")
        raise
    progress.done(f"done, {changes_made(result.report)}")
    return Session.open(inventory, timeout=timeout)
