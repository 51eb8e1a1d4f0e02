"""``make_app(source, token)``: the toppipe dashboard, a Dash app behind token auth.

Pages: ``/`` the site (from the poller's cache), ``/runs`` the runs (one page
queried at a time), ``/runs/<id>`` one run, ``/logs/...`` a log (a service's, a Slurm job's, a
failed task's worker's: :mod:`toppipe.dashboard.views.logs`). The JS is served from the
installed packages (``serve_locally``) and the stylesheet from ``assets/``: the app needs
no network. The page shell is dash-bootstrap-components (a navbar, a card per section).
"""

from __future__ import annotations

from typing import Callable

import dash_bootstrap_components as dbc
from dash import Dash, dcc, html
from flask import Flask

from toppipe.dashboard import callbacks
from toppipe.dashboard.auth import TokenAuth
from toppipe.dashboard.handlers import Dashboard
from toppipe.dashboard.source import SiteSource
from toppipe.dashboard.views import logs as logs_view
from toppipe.dashboard.views import run as run_view
from toppipe.dashboard.views import runs as runs_view
from toppipe.dashboard.views import site as site_view


def shell() -> html.Div:
    """What every page has: the URL, the navigation bar, the action message, and the page."""
    return html.Div([
        dcc.Location(id="url"),
        html.Header(dbc.Navbar([
            dcc.Link("toppipe", href="/", className="navbar-brand"),
            dbc.Nav([
                dbc.NavItem(dbc.NavLink("site", href="/", id="nav-site", active="exact")),
                dbc.NavItem(dbc.NavLink("runs", href="/runs", id="nav-runs", active="partial")),
            ]),
        ], dark=True, color="dark")),
        dbc.Container(fluid=True, children=[
            html.Div(id="action-message", role="status", className="action-message"),
            html.Main(id="page"),
        ]),
    ])  # fmt: skip


def make_app(source: SiteSource, token: str, poll_interval: float = 3.0,
             on_action: Callable[[dict], None] | None = None) -> Dash:  # fmt: skip
    """The dashboard of *source*; every request needs *token* (see :mod:`toppipe.dashboard.auth`).

    *on_action* receives each action's audit entry (``action``, ``args``, ``ok``,
    ``result``, ``time``, ``seconds``). ``app.toppipe`` is the
    :class:`~toppipe.dashboard.handlers.Dashboard`: its poller, actions, audit.
    """
    server = Flask(__name__, static_folder=None)
    TokenAuth(token).install(server)  # before Dash adds its routes: the check runs first
    app = Dash(__name__, server=server, title="toppipe", update_title=None, serve_locally=True, compress=False)
    board = Dashboard(source, poll_interval, on_action)
    app.layout = shell()
    app.validation_layout = html.Div([shell(), site_view.layout(poll_interval), runs_view.layout(), run_view.layout("-"),
                                     logs_view.layout("-", "-"), logs_view.task_layout("-", "-")])
    callbacks.register(app, board)
    app.toppipe = board
    return app
