"""toppipe: a session on a deployed site, from a notebook or a script.

    import toppipe
    session = toppipe.connect("local")      # a site name or an inventory path
    session.client.submit(sum, [1, 2]).result()

Importing this package is cheap; dask is imported by :func:`connect`.
"""

from toppipe.errors import NotDeployedError, ToppipeError

__all__ = ["NotDeployedError", "ToppipeError", "connect"]


def connect(site: str = "local", *, timeout: float | None = None):
    """A :class:`toppipe.session.Session` on *site* (a name or an inventory folder)."""
    from toppipe.session import Session

    return Session.open(site, timeout=timeout)
