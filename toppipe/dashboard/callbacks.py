"""Wires :class:`~toppipe.dashboard.handlers.Dashboard` methods to Dash callbacks (no logic here)."""

from __future__ import annotations

from dash import ALL, Dash, Input, Output, State, ctx

from toppipe.dashboard.handlers import Dashboard
from toppipe.dashboard.views import logs as logs_view

MESSAGE = Output("action-message", "children", allow_duplicate=True)
SERVICE_BUTTONS = {"type": "service-action", "action": ALL, "host": ALL, "name": ALL}


def register(app: Dash, board: Dashboard) -> None:
    @app.callback(Output("page", "children"), Input("url", "pathname"))
    def route(pathname):
        return board.route(pathname)

    @app.callback(
        Output("site-status", "children"), Output("site-content", "children"), Output("site-rendered-at", "data"),
        Input("site-interval", "n_intervals"), State("site-rendered-at", "data"),
    )  # fmt: skip
    def refresh_site(_n, rendered_at):
        return board.site(rendered_at)

    @app.callback(
        Output("log-text", "children"), Output("log-status", "children"), Output("log-lines", "data"),
        Input("log-interval", "n_intervals"), State("log-target", "data"), State("log-lines", "data"),
    )  # fmt: skip
    def follow_log(_n, target, shown):
        return board.follow_log(target, shown)

    app.clientside_callback(logs_view.SCROLL_TO_END, Output("log-scrolled", "data"), Input("log-text", "children"))

    @app.callback(Output("task-log-content", "children"), Input("task-log-ids", "data"))
    def task_log(ids):
        return board.task_log(ids)

    @app.callback(
        Output("pending-action", "data"), Output("action-confirm", "message"), Output("action-confirm", "displayed"),
        Input(SERVICE_BUTTONS, "n_clicks"), prevent_initial_call=True,
    )  # fmt: skip
    def ask_service_action(_clicks):
        clicked = ctx.triggered[0]["value"] if len(ctx.triggered) == 1 else None  # a re-render "triggers" them all, with 0
        return board.ask_service_action(ctx.triggered_id, clicked)

    @app.callback(MESSAGE, Input("action-confirm", "submit_n_clicks"), State("pending-action", "data"), prevent_initial_call=True)
    def confirm_service_action(submitted, pending):
        return board.confirm_pending(pending, submitted)

    @app.callback(
        Output("scale-confirm", "message"), Output("scale-confirm", "displayed"), MESSAGE,
        Input("scale-button", "n_clicks"), State("scale-n", "value"), State("scale-on", "value"), prevent_initial_call=True,
    )  # fmt: skip
    def ask_scale(clicks, n, on):
        return board.ask_scale(n, on, clicks)

    @app.callback(
        MESSAGE, Input("scale-confirm", "submit_n_clicks"), State("scale-n", "value"), State("scale-on", "value"),
        prevent_initial_call=True,
    )  # fmt: skip
    def confirm_scale(submitted, n, on):
        return board.confirm_scale(n, on, submitted)

    @app.callback(
        Output("runs-content", "children"), Output("runs-page-info", "children"), Output("runs-page-index", "data"),
        Output("runs-prev", "disabled"), Output("runs-next", "disabled"),
        Input("runs-prev", "n_clicks"), Input("runs-next", "n_clicks"), Input("runs-filter-pipeline", "value"),
        Input("runs-filter-state", "value"), Input("runs-interval", "n_intervals"), State("runs-page-index", "data"),
    )  # fmt: skip
    def refresh_runs(_prev, _next, pipeline, state, _n, index):
        return board.runs(index, pipeline, state, triggered=ctx.triggered_id)

    @app.callback(
        Output("run-content", "children"), Output("run-details", "children"),
        Output("run-graph", "elements"), Output("run-graph-note", "children"), Output("run-graph-selected", "children"),
        Output("run-graph", "style"), Output("run-interval", "disabled"), Output("run-interval", "interval"),
        Output("run-cancel", "disabled"), Input("run-interval", "n_intervals"), State("run-id", "data"),
        State("run-graph", "tapNodeData"),
    )  # fmt: skip
    def refresh_run(_n, run_id, clicked):
        return board.run_page(run_id, clicked)

    @app.callback(
        Output("run-graph-selected", "children", allow_duplicate=True), Input("run-graph", "tapNodeData"),
        prevent_initial_call=True,
    )  # fmt: skip
    def select_task(node):
        return board.select_task(node)

    @app.callback(
        Output("run-elements-page", "data"), Input("run-elements-prev", "n_clicks"), Input("run-elements-next", "n_clicks"),
        Input("run-elements-task", "value"), Input("run-elements-state", "value"), State("run-elements-page", "data"),
        prevent_initial_call=True,
    )  # fmt: skip
    def turn_elements_page(_prev, _next, _task, _state, index):
        return board.element_page_index(index, ctx.triggered_id)

    @app.callback(
        Output("run-elements-task", "options"), Output("run-elements", "children"), Output("run-elements-info", "children"),
        Output("run-elements-prev", "disabled"), Output("run-elements-next", "disabled"),
        Input("run-elements-page", "data"), Input("run-elements-task", "value"), Input("run-elements-state", "value"),
        Input("run-interval", "n_intervals"), State("run-id", "data"),
    )  # fmt: skip
    def refresh_elements(index, task, state, _n, run_id):
        return board.elements(run_id, task, state, index)

    @app.callback(Output("run-elements-task", "value"), Output("run-elements-state", "value"), Input("url", "search"))
    def drill(search):
        return board.drill(search)

    @app.callback(
        Output("run-cancel-confirm", "message"), Output("run-cancel-confirm", "displayed"),
        Input("run-cancel", "n_clicks"), State("run-id", "data"), prevent_initial_call=True,
    )  # fmt: skip
    def ask_cancel(clicks, run_id):
        return board.ask_cancel(run_id, clicks)

    @app.callback(MESSAGE, Input("run-cancel-confirm", "submit_n_clicks"), State("run-id", "data"), prevent_initial_call=True)
    def confirm_cancel(submitted, run_id):
        return board.confirm_cancel(run_id, submitted)
