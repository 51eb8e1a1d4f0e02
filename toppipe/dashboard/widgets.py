"""Building blocks shared by the pages: cards, tables, state badges, links, confirm dialogs
(dash-bootstrap-components, styled by ``assets/toppipe.css``)."""

from __future__ import annotations

from typing import Any, Iterable
from urllib.parse import urlparse

import dash_bootstrap_components as dbc
from dash import dcc, html

from toppipe.pipeline.render import PALETTE


def table(table_id: str | None, headers: Iterable[str], rows: Iterable[tuple[Any, list[Any]]]) -> dbc.Table:
    """A table; *rows* are ``(row_id or None, cells)``."""
    head = html.Thead(html.Tr([html.Th(h) for h in headers]))
    body = html.Tbody([
        html.Tr([html.Td(cell) for cell in cells], **({"id": row_id} if row_id else {}))
        for row_id, cells in rows
    ])  # fmt: skip
    return dbc.Table([head, body], **({"id": table_id} if table_id else {}), size="sm", striped=True, hover=True)


def state_badge(state: str | None, element_id: str | None = None) -> html.Span:
    """*state* in its palette colours (``className`` ``state state-<name>`` for tests and css)."""
    fill, stroke = PALETTE.get(state, PALETTE[None])
    style = {"background": fill, "border": f"1px solid {stroke}", "borderRadius": "4px", "padding": "0 6px"}
    return html.Span(state or "-", className=f"state state-{state or 'none'}", style=style,
                     **({"id": element_id} if element_id else {}))  # fmt: skip


def safe_href(url: str | None) -> str | None:
    """*url* when it is http(s), else None (never a ``javascript:`` link from a source)."""
    return url if url and urlparse(url).scheme in ("http", "https") else None


def external_link(element_id: str, label: str, url: str | None) -> html.Span | html.A:
    href = safe_href(url)
    if href is None:
        return html.Span(f"{label}: not available", id=element_id, className="link-missing")
    return html.A(label, id=element_id, href=href, target="_blank", rel="noopener noreferrer")


def confirm(dialog_id: str) -> dcc.ConfirmDialog:
    """A browser confirm dialog; its message is set by the callback that shows it."""
    return dcc.ConfirmDialog(id=dialog_id, message="")


def section(title: str, *children: Any, section_id: str | None = None) -> dbc.Card:
    """A card: the section's title as its header, *children* as its body."""
    return dbc.Card([dbc.CardHeader(html.H2(title)), dbc.CardBody(list(children))],
                    **({"id": section_id} if section_id else {}))  # fmt: skip
