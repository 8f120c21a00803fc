"""Access control: with a token configured, every page, API call and socket must present it.

A client presents it as `Authorization: Bearer <token>`, as `?token=<token>`, or through the cookie set
by the login form (or by a page opened with `?token=`). The cookie holds a digest of the token, not
the token itself. `/login`, `/static/` and the bare liveness probe `/healthz` stay open.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Request,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.wrappers import Response

COOKIE = "mw_session"
COOKIE_MAX_AGE_S = 30 * 24 * 3600
OPEN_ENDPOINTS = frozenset({"static", "auth.login", "auth.logout", "api.healthz"})

bp = Blueprint("auth", __name__)


def session_value(token: str) -> str:
    """What the cookie holds for `token`: a keyed digest, so the cookie never carries the token itself."""
    return hmac.new(token.encode(), b"maskwatch-dashboard-session", hashlib.sha256).hexdigest()


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def presented(req: Request, auth: Mapping[str, Any] | None = None) -> tuple[str | None, str | None]:
    """(how, value) of the credential a request carries: bearer, query, socket auth or cookie."""
    header = req.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return "bearer", header[7:].strip()
    if "token" in req.args:
        return "query", req.args["token"]
    if auth and isinstance(auth.get("token"), str):
        return "auth", auth["token"]
    if COOKIE in req.cookies:
        return "cookie", req.cookies[COOKIE]
    return None, None


def allowed(token: str | None, req: Request, auth: Mapping[str, Any] | None = None) -> bool:
    """True when no token is configured or the request presents it."""
    if token is None:
        return True
    how, value = presented(req, auth)
    if value is None:
        return False
    if how == "cookie":
        return _same(value, session_value(token))
    return _same(value, token)


def _safe_next(target: str | None) -> str:
    """A local path to return to after login; anything pointing elsewhere becomes '/'."""
    if not target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


def _set_session(resp: Response, token: str) -> None:
    resp.set_cookie(
        COOKIE,
        session_value(token),
        max_age=COOKIE_MAX_AGE_S,
        httponly=True,
        samesite="Lax",
        secure=request.is_secure,
    )


def install(app: Flask, token: str | None) -> None:
    """Guard every endpoint of `app` (but the open ones) with `token`; no-op when it is None."""
    app.config["MW_TOKEN"] = token
    app.register_blueprint(bp)
    if token is None:
        return

    @app.before_request
    def _guard() -> Any:
        if request.endpoint in OPEN_ENDPOINTS:
            return None
        if allowed(token, request):
            if presented(request)[0] == "query" and not request.path.startswith("/api/"):
                g.mw_set_session = True
            return None
        if request.path.startswith("/api/"):
            resp = jsonify(error="unauthorized", detail="send Authorization: Bearer <token> or ?token=<token>")
            resp.status_code = 401
            resp.headers["WWW-Authenticate"] = 'Bearer realm="maskwatch"'
            return resp
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))

    @app.after_request
    def _remember(resp: Response) -> Response:
        if g.get("mw_set_session"):
            _set_session(resp, token)
        return resp


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    token: str | None = current_app.config.get("MW_TOKEN")
    nxt = _safe_next(request.values.get("next"))
    if token is None:
        return redirect(nxt)
    error = None
    if request.method == "POST":
        if _same(request.form.get("token", ""), token):
            resp = redirect(nxt)
            _set_session(resp, token)
            return resp
        error = "That token is not right."
    return render_template("login.html", next=nxt, error=error), 401 if error else 200


@bp.route("/logout", methods=["POST", "GET"])
def logout() -> Any:
    resp = redirect(url_for("auth.login"))
    resp.delete_cookie(COOKIE)
    return resp
