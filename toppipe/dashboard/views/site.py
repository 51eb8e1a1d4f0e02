"""``/``: the site: hosts, services (with start/stop/restart and their logs), workers, the Slurm
queue (each job's output), links,
and the scale form. Refreshed from the poller's cache only, never from the source."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from dash import dcc, html

from toppipe.dashboard.formats import duration, size, when
from toppipe.dashboard.views.logs import job_href, log_href
from toppipe.dashboard.widgets import confirm, external_link, section, table

SERVICE_ACTIONS = ("start", "stop", "restart")


def layout(poll_interval: float) -> html.Div:
    """The page's skeleton: the content is filled by the ``site-interval`` callback."""
    return html.Div(id="site-page", children=[
        dcc.Interval(id="site-interval", interval=int(poll_interval * 1000)),
        dcc.Store(id="site-rendered-at"),
        dcc.Store(id="pending-action"),
        confirm("action-confirm"),
        html.Div(id="site-status", className="status-line"),
        html.Div(id="site-content", children="waiting for the site's first status..."),
        section("Scale", scale_form(), section_id="scale-section"),
    ])  # fmt: skip


def scale_form() -> html.Div:
    return html.Div(id="scale-form", children=[
        html.Label(["workers ", dcc.Input(id="scale-n", type="number", min=0, step=1, value=1, style={"width": "5em"})]),
        dcc.RadioItems(id="scale-on", options=["hosts", "slurm"], value="slurm", inline=True,
                       style={"display": "inline-block", "margin": "0 1em"}),
        html.Button("scale", id="scale-button"),
        confirm("scale-confirm"),
    ])  # fmt: skip


def status_line(fetched_at: float | None, error: str | None, now: float) -> list[Any]:
    """``status read 2 s ago``, and the last error when the latest read failed."""
    parts: list[Any] = []
    if fetched_at is None:
        parts.append(html.Span("no status read yet", id="site-fetched"))
    else:
        parts.append(html.Span(f"status read {duration(max(now - fetched_at, 0))} ago ({when(fetched_at)})", id="site-fetched"))
    if error:
        parts.append(html.Span(f" - last read failed: {error}", id="site-error", style={"color": "#dc2626"}))
    return parts


def content(view: dict | None) -> list[Any]:
    """The page's sections for one ``site_view()`` result (shapes: :mod:`toppipe.dashboard.source`)."""
    if not view:
        return [html.P("waiting for the site's first status...", id="site-waiting")]
    links = view.get("links") or {}
    return [
        html.Div(id="site-links", children=[
            external_link("link-dask", "dask dashboard", links.get("dask")), " · ",
            external_link("link-jupyter", "JupyterLab", links.get("jupyter")),
        ]),  # fmt: skip
        section("Hosts", html.Ul([host_item(h) for h in view.get("hosts", [])], id="hosts-list")),
        section("Services", services_table(view.get("services", []))),
        section("Pools", pools_table(view.get("pools", []))),
        section("The last hour", history_plots(view.get("history", [])), section_id="history-section"),
        section("Workers", *workers_sections(view.get("workers", []), view.get("slurm_queue", []))),
        section("Slurm queue", slurm_table(view.get("slurm_queue", []))),
    ]


def host_item(host: str | dict) -> html.Li:
    """A host: a name, or ``{"name", "address"?, "reachable"?}``."""
    if isinstance(host, str):
        return html.Li(host, id=f"host-{host}")
    text = host["name"] + (f" ({host['address']})" if host.get("address") else "")
    unreachable = host.get("reachable") is False
    return html.Li([text, html.Span(" unreachable", className="health-bad", style={"color": "#dc2626"}) if unreachable else None],
                   id=f"host-{host['name']}")  # fmt: skip


def action_button(action: str, host: str, name: str) -> html.Button:
    """A button whose pattern id carries what it does (the dialog asks before it is done)."""
    button_id = {"type": "service-action", "action": action, "host": host, "name": name}
    return html.Button(action, id=button_id, n_clicks=0, className=f"service-{action}",
                       **{"data-action": action, "data-service": f"{host}/{name}"})  # fmt: skip


def services_table(services: list[dict]) -> html.Table:
    rows = []
    for s in sorted(services, key=lambda s: (s["host"], s["name"])):
        health = html.Span("up" if s.get("healthy") else "DOWN", className="health-ok" if s.get("healthy") else "health-bad",
                           style={"color": "#16a34a" if s.get("healthy") else "#dc2626", "fontWeight": "bold"})  # fmt: skip
        buttons = html.Span([action_button(a, s["host"], s["name"]) for a in SERVICE_ACTIONS])
        log = "" if s["name"].startswith("(") else dcc.Link("log", href=log_href(s["host"], s["name"]), className="service-log",
                                                            id=f"service-log-{s['host']}-{s['name']}")  # fmt: skip
        rows.append((f"service-{s['host']}-{s['name']}", [
            s["host"], s["name"], health, s.get("detail") or "", duration(s.get("uptime_s")), s.get("where") or "", log, buttons,
        ]))  # fmt: skip
    return table("services-table", ("host", "service", "health", "detail", "uptime", "where", "log", "actions"), rows)


def _worker_row(w: dict, first: str) -> tuple[str, list[Any]]:
    cpu = w.get("cpu")
    return (f"worker-{w['name']}", [w.get(first) or "-", w["name"], w.get("threads", "-"), size(w.get("memory")),
                                    "-" if cpu is None else f"{cpu:.0f} %"])  # fmt: skip


def workers_sections(workers: list[dict], queue: list[dict]) -> list[Any]:
    """Workers grouped by host, then the Slurm ones grouped by job (with the job's queue state)."""
    by_host, by_job = defaultdict(list), defaultdict(list)
    for w in sorted(workers, key=lambda w: (w.get("host") or "", w["name"])):
        by_host[w.get("host") or "?"].append(w)
        if w.get("slurm_job"):
            by_job[str(w["slurm_job"])].append(w)
    jobs = {str(j["job_id"]): j for j in queue}
    hosts = [html.Div([html.H3(f"{host}: {len(ws)} worker{'s' * (len(ws) != 1)}", style={"fontSize": "1em"}),
                       table(f"workers-host-{host}", ("slurm job", "worker", "threads", "memory", "cpu"),
                             [_worker_row(w, "slurm_job") for w in ws])])
             for host, ws in by_host.items()]  # fmt: skip
    per_job = [html.Div([html.H3([f"Slurm job {job} ({jobs.get(job, {}).get('state', 'not in the queue')}) ",
                                  dcc.Link("output", href=job_href(job), className="job-log")], style={"fontSize": "1em"}),
                         table(f"workers-job-{job}", ("host", "worker", "threads", "memory", "cpu"), [_worker_row(w, "host") for w in ws])])
               for job, ws in sorted(by_job.items())]  # fmt: skip
    return [
        html.Div(hosts or [html.P("no workers connected")], id="workers-by-host"),
        html.H3("by Slurm job", style={"fontSize": "1em"}),
        html.Div(per_job or [html.P("no Slurm workers")], id="workers-by-job"),
    ]


def slurm_table(queue: list[dict]) -> html.Div | html.Table:
    if not queue:
        return html.Div("no Slurm jobs", id="slurm-queue")
    rows = [(f"slurm-job-{j['job_id']}", [j["job_id"], j.get("pool") or "-", j.get("state", "-"), j.get("node") or "-",
                                          j.get("elapsed") or "-", job_output(j)]) for j in queue]  # fmt: skip
    return table("slurm-queue", ("job", "pool", "state", "node", "elapsed", "output"), rows)


def job_output(job: dict) -> Any:
    """A link to the job's output, once it runs (a pending job has written nothing)."""
    if str(job.get("state", "")).upper() in ("PENDING", "PD"):
        return "-"
    return dcc.Link("output", href=job_href(str(job["job_id"])), className="job-log", id=f"job-log-{job['job_id']}")


def _figure(title: str, unit: str, lines: dict[str, tuple[list, list]]) -> dict:
    """A plotly figure (as a dict: no plotly import on the page's path) of named lines."""
    data = [{"type": "scatter", "mode": "lines", "name": name, "x": x, "y": y} for name, (x, y) in lines.items()]
    return {"data": data, "layout": {"title": {"text": title}, "height": 220, "margin": {"l": 50, "r": 10, "t": 30, "b": 30},
                                     "yaxis": {"title": {"text": unit}, "rangemode": "tozero"}, "showlegend": len(lines) > 1}}  # fmt: skip


def history_plots(history: list[dict]) -> html.Div:
    """CPU and memory per host, tasks per second and the Slurm queue, from the agent's samples."""
    if not history:
        return html.Div("no samples yet (the site agent takes one every 10 s)", id="history-plots")
    times = [when(s["time"]) for s in history]
    hosts = sorted({h for s in history for h in s["hosts"]})

    def per_host(key: str, scale: float = 1.0) -> dict[str, tuple[list, list]]:
        return {h: (times, [s["hosts"].get(h, {}).get(key, 0) / scale for s in history]) for h in hosts}

    figures = [
        ("history-cpu", _figure("CPU per host", "%", per_host("cpu"))),
        ("history-memory", _figure("Memory per host", "GiB", per_host("memory", 2**30))),
        ("history-throughput", _figure("Tasks finished", "per second", {"tasks": (times, [s.get("throughput", 0) for s in history])})),
        ("history-queue", _figure("Slurm queue", "jobs", {state: (times, [s["slurm"][state] for s in history])
                                                          for state in ("running", "pending")})),
    ]  # fmt: skip
    return html.Div([dcc.Graph(id=graph_id, figure=figure, config={"displayModeBar": False}, className="history-plot")
                     for graph_id, figure in figures], id="history-plots")  # fmt: skip


def _limits(pool: dict) -> str:
    limits = pool.get("limits") or {}
    if pool.get("kind") == "slurm":
        return f"partition {limits.get('partition') or 'default'}, at most {limits.get('max_jobs')} jobs of {limits.get('walltime')}"
    return ", ".join(f"{host}: {n}" for host, n in (limits.get("per_host") or {}).items())


def pools_table(pools: list[dict]) -> html.Div | html.Table:
    """Each pool: its kind, what its workers offer, its workers and pending jobs, its limits and mode."""
    if not pools:
        return html.Div("no pools reported yet", id="pools-table")
    rows = []
    for p in pools:
        offers = ", ".join(f"{k}={v:g}" for k, v in (p.get("offers") or {}).items()) or "-"
        adaptive = p.get("adaptive")
        mode = f"adaptive {adaptive[0]} to {adaptive[1]}" if adaptive else "manual"
        rows.append((f"pool-{p['name']}", [p["name"], p.get("kind", "-"), offers, p.get("workers", 0), p.get("pending_jobs", 0),
                                           _limits(p), mode]))  # fmt: skip
    return table("pools-table", ("pool", "kind", "offers", "workers", "pending jobs", "limits", "mode"), rows)


def confirm_message(action: str, host: str, name: str) -> str:
    return f"{action.capitalize()} {name} on {host}?"
