"""Token auth in front of every route of the Flask server under Dash.

A request passes with ``Authorization: Bearer TOKEN`` or with the session
cookie. ``GET /any/page?token=TOKEN`` sets that cookie and redirects to the
same path without the query string; the login form POSTs the token to
``/_login`` (the body is never logged). The cookie holds an HMAC of the token,
not the token; it is HttpOnly and SameSite=Strict (and Secure over https).
Every comparison is constant-time. Anything else gets 401: a minimal login
page for a page GET, a plain line for callbacks and assets.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from html import escape

from flask import Flask, Response, redirect, request

from toppipe.dashboard.actions import DashboardError

COOKIE = "toppipe_dashboard"
LOGIN_PATH = "/_login"
_LABEL = b"toppipe-dashboard-session-v1"
_MACHINERY = ("/_dash", "/_reload", "/_favicon", "/assets/", LOGIN_PATH)

LOGIN_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>toppipe dashboard: sign in</title></head>
<body style="font-family:system-ui,sans-serif;margin:3em">
<h1>toppipe dashboard</h1><p id="login-message">{message}</p>
<form id="login-form" method="post" action="{action}">
<input type="hidden" name="next" value="{next}">
<label>token <input id="login-token" name="token" type="password" autocomplete="off" autofocus></label>
<button id="login-submit" type="submit">sign in</button></form></body></html>"""


def session_value(token: str) -> str:
    """What the cookie holds: HMAC-SHA256 of the token (it changes when the token does)."""
    return hmac.new(token.encode(), _LABEL, hashlib.sha256).hexdigest()


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


def _same(given: str, expected: str) -> bool:
    """Constant-time equality, whatever the lengths (both sides are hashed first)."""
    return hmac.compare_digest(_digest(given), _digest(expected))


def _local_path(path: str | None) -> str:
    """*path* if it is a path on this server, else ``/`` (no open redirect)."""
    return path if path and path.startswith("/") and not path.startswith("//") and "\\" not in path else "/"


class TokenAuth:
    """Installs the check as the server's first ``before_request``."""

    def __init__(self, token: str):
        if not token:
            raise DashboardError("the dashboard needs a non-empty token")
        self.token, self.cookie_value = token, session_value(token)

    def install(self, server: Flask) -> None:
        server.before_request_funcs.setdefault(None, []).insert(0, self.check)
        server.after_request(_harden)
        redact_request_logs()

    def authenticated(self) -> bool:
        header = request.headers.get("Authorization", "")
        if header[:7].lower() == "bearer ":
            return _same(header[7:].strip(), self.token)
        return _same(request.cookies.get(COOKIE, ""), self.cookie_value)

    def check(self) -> Response | None:
        """None lets the request through; else the response that refuses or logs in."""
        given = request.args.get("token") if request.method == "GET" else None
        if request.path == LOGIN_PATH and request.method == "POST":
            given, target = request.form.get("token", ""), request.form.get("next")
        else:
            target = request.path
        if given is not None:
            if _same(given, self.token):
                return self._login(_local_path(target))
            return _refuse("wrong token")
        if self.authenticated():
            return None
        return _refuse("sign in with the dashboard's token")

    def _login(self, target: str) -> Response:
        response = redirect(target, code=303)
        response.set_cookie(COOKIE, self.cookie_value, httponly=True, samesite="Strict", secure=request.is_secure, path="/")
        response.headers["Cache-Control"] = "no-store"
        return response


def _refuse(message: str) -> Response:
    page = request.method == "GET" and not request.path.startswith(_MACHINERY)
    if page:
        body = LOGIN_PAGE.format(message=escape(message), action=LOGIN_PATH, next=escape(request.path, quote=True))
        response = Response(body, 401, mimetype="text/html")
    else:
        response = Response(f"401 {message}\n", 401, mimetype="text/plain")
    response.headers["WWW-Authenticate"] = 'Bearer realm="toppipe dashboard"'
    response.headers["Cache-Control"] = "no-store"
    return response


def _harden(response: Response) -> Response:
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    return response


_TOKEN_IN_QUERY = re.compile(r"([?&]token=)[^&\s\"]*", re.IGNORECASE)


class RedactToken(logging.Filter):
    """Blanks ``token=...`` in request log lines (werkzeug logs the query string)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _TOKEN_IN_QUERY.sub(r"\1[redacted]", message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


def redact_request_logs() -> None:
    """Add :class:`RedactToken` to the ``werkzeug`` logger, once."""
    logger = logging.getLogger("werkzeug")
    if not any(isinstance(f, RedactToken) for f in logger.filters):
        logger.addFilter(RedactToken())
