"""The dashboard's WSGI server: waitress (pure Python, threads, no fork), not Flask's
development server, since the dashboard is a long-running service.

waitress writes no request log (a login URL holds the token); its own warnings go to
the ``waitress`` logger. :func:`serve` blocks; :func:`make_server` is what tests start
on port 0 and :meth:`close`.
"""

from __future__ import annotations

import errno

from waitress import create_server
from waitress.server import BaseWSGIServer

from toppipe.errors import ToppipeError

#: Request threads: page loads and refreshes are short, an action (restart a service) can take a
#: minute; several open pages and one slow action must not queue the others behind it.
THREADS = 8


class ServerError(ToppipeError):
    """The dashboard cannot listen (a port in use, an address not on this machine)."""


def make_server(wsgi_app, bind: str, port: int) -> BaseWSGIServer:
    """A waitress server for *wsgi_app* listening on *bind*:*port* (0: any free port,
    see ``server.effective_port``); nothing is served until ``server.run()``."""
    try:
        return create_server(wsgi_app, host=bind, port=port, threads=THREADS, ident="toppipe-dashboard",
                             clear_untrusted_proxy_headers=True)  # fmt: skip
    except OSError as error:
        why = "the port is in use" if error.errno == errno.EADDRINUSE else (error.strerror or str(error))
        raise ServerError(f"dashboard: cannot listen on {bind}:{port}: {why}") from None


def serve(wsgi_app, bind: str, port: int) -> None:
    """Serve *wsgi_app* until the process is stopped."""
    server = make_server(wsgi_app, bind, port)
    try:
        server.run()
    finally:
        server.close()
