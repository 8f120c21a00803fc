"""Access control: with a token configured, every page, API call and socket must present it or a live session.

A client presents the token as `Authorization: Bearer <token>`, as `?token=<token>`, or logs in with it once
and then carries a session cookie. A session is a random id whose data lives in Redis with an expiry; logout
revokes it, so a copied cookie stops working. A page opened with `?token=` gets a session and is redirected to
the same URL without the token. Failed logins and wrong tokens are counted per client address (after the
trusted proxy hops) and logged without the token; past `auth_max_failures` in `auth_window_s` the address gets
429 until the window ends. `/login`, `/static/` and the bare liveness probe `/healthz` stay open.

Besides the main token (an admin that sees everything), the site file's `access:` entries name tokens by their
SHA-256, each with a role and a scope (dashboard/access.py); the request's principal is `access.current()`.
Admin-only pages and endpoints answer a viewer 403.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode, urlsplit

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

from dashboard import access
from dashboard.context import dashboard
from maskwatch.site import AccessEntry

logger = logging.getLogger(__name__)

COOKIE = "mw_session"
OPEN_ENDPOINTS = frozenset({"static", "auth.login", "auth.logout", "api.healthz"})
# endpoints only an admin may reach: the upload check page and its model call
ADMIN_ENDPOINTS = frozenset({"pages.check"})
ADMIN_BLUEPRINTS = frozenset({"predict"})
ACCESS_CONFIG = "MW_ACCESS"

bp = Blueprint("auth", __name__)


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


def _access() -> tuple[AccessEntry, ...]:
    return tuple(current_app.config.get(ACCESS_CONFIG, ()))


def principal_of(token: str | None, req: Request, auth: Mapping[str, Any] | None = None) -> access.Principal | None:
    """Who the request is: everyone when no token is configured, else the principal of the token or session it
    presents (None: nobody)."""
    entries = _access()
    if token is None and not entries:
        return access.EVERYONE
    how, value = presented(req, auth)
    if value is None:
        return None
    if how == "cookie":
        data = dashboard().store.session(value)
        return access.by_name(data.get("principal"), token, entries) if data is not None else None
    return access.by_token(value, token, entries)


def allowed(token: str | None, req: Request, auth: Mapping[str, Any] | None = None) -> bool:
    """True when no token is configured, or the request presents a known token or the id of a live session."""
    return principal_of(token, req, auth) is not None


def client_address(req: Request) -> str:
    """The client's address as the rate limit counts it (the proxy's X-Forwarded-For only for trusted hops)."""
    return req.remote_addr or "unknown"


def throttled(req: Request) -> int:
    """Seconds this client must wait because of too many failures (0: it may try)."""
    settings = dashboard().settings
    failures, ttl = dashboard().store.auth_failures(client_address(req))
    return max(ttl, 1) if failures >= settings.auth_max_failures else 0


def record_failure(req: Request, how: str | None) -> None:
    """Count and log a failed login or wrong token (never the token itself)."""
    settings = dashboard().settings
    client = client_address(req)
    failures = dashboard().store.add_auth_failure(client, settings.auth_window_s)
    logger.warning(
        "authentication failed remote=%s via=%s path=%s failures=%d limit=%d window_s=%d",
        client,
        how,
        req.path,
        failures,
        settings.auth_max_failures,
        settings.auth_window_s,
    )


def too_many(retry_after_s: int) -> Response:
    resp = jsonify(error="too many failed attempts", retry_after_s=retry_after_s)
    resp.status_code = 429
    resp.headers["Retry-After"] = str(retry_after_s)
    return resp


def check_socket(token: str | None, req: Request, auth: Mapping[str, Any] | None) -> access.Principal | None:
    """The Socket.IO handshake's check: like a request's, wrong tokens counted, refused while throttled.

    Returns the socket's principal (None: refused)."""
    if token is None and not _access():
        return access.EVERYONE
    how, value = presented(req, auth)
    if how in ("bearer", "query", "auth") and throttled(req):
        return None
    who = principal_of(token, req, auth)
    if who is None and how in ("bearer", "query", "auth"):
        record_failure(req, how)
    return who


def _safe_next(target: str | None) -> str:
    """A local path to return to after login; anything pointing elsewhere becomes '/'."""
    if not target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


def open_session(resp: Response, who: access.Principal) -> None:
    """Start a server-side session and give its id to the browser (Secure when the request came over TLS)."""
    settings = dashboard().settings
    sid = dashboard().store.create_session({"principal": who.name}, settings.session_ttl_s)
    resp.set_cookie(
        COOKIE,
        sid,
        max_age=settings.session_ttl_s,
        httponly=True,
        samesite="Lax",
        secure=request.is_secure,
    )


def _without_token(req: Request) -> str:
    """The request's path and query string with `token` removed."""
    rest = [(k, v) for k, v in req.args.items(multi=True) if k != "token"]
    return req.path + ("?" + urlencode(rest) if rest else "")


def _admin_only(endpoint: str | None) -> bool:
    return endpoint in ADMIN_ENDPOINTS or (endpoint or "").split(".")[0] in ADMIN_BLUEPRINTS


def forbidden(who: access.Principal) -> Any:
    logger.info("forbidden principal=%s role=%s path=%s", who.name, who.role, request.path)
    if request.path.startswith("/api/"):
        resp = jsonify(error="forbidden", detail="this token's role may not do this")
        resp.status_code = 403
        return resp
    return "Forbidden: this token's role may not open this page.", 403


def install(app: Flask, token: str | None, entries: Sequence[AccessEntry] = ()) -> None:
    """Guard every endpoint of `app` (but the open ones) with `token` and the `access:` tokens; no-op with neither."""
    app.config["MW_TOKEN"] = token
    app.config[ACCESS_CONFIG] = tuple(entries)
    app.register_blueprint(bp)
    if token is None and not entries:
        return

    @app.before_request
    def _guard() -> Any:
        if request.endpoint in OPEN_ENDPOINTS:
            return None
        how, _ = presented(request)
        if how in ("bearer", "query"):
            wait = throttled(request)
            if wait:
                return too_many(wait)
        who = principal_of(token, request)
        if who is not None:
            g.mw_principal = who
            if _admin_only(request.endpoint) and not who.is_admin:
                return forbidden(who)
            if how == "query" and request.method == "GET" and not request.path.startswith("/api/"):
                resp = redirect(_without_token(request))
                open_session(resp, who)
                return resp
            return None
        if how in ("bearer", "query"):
            record_failure(request, how)
        if request.path.startswith("/api/"):
            resp = jsonify(error="unauthorized", detail="send Authorization: Bearer <token> or ?token=<token>")
            resp.status_code = 401
            resp.headers["WWW-Authenticate"] = 'Bearer realm="maskwatch"'
            return resp
        return redirect(url_for("auth.login", next=_without_token(request)))

    @app.after_request
    def _no_store(resp: Response) -> Response:
        if g.get("mw_login_page"):
            resp.headers["Cache-Control"] = "no-store"
        return resp


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    token: str | None = current_app.config.get("MW_TOKEN")
    nxt = _safe_next(request.values.get("next"))
    if token is None and not _access():
        return redirect(nxt)
    g.mw_login_page = True
    error = None
    if request.method == "POST":
        wait = throttled(request)
        if wait:
            return too_many(wait)
        who = access.by_token(request.form.get("token", ""), token, _access())
        if who is not None:
            resp = redirect(nxt)
            open_session(resp, who)
            return resp
        record_failure(request, "login")
        error = "That token is not right."
    return render_template("login.html", next=nxt, error=error), 401 if error else 200


@bp.route("/logout", methods=["POST", "GET"])
def logout() -> Any:
    sid = request.cookies.get(COOKIE)
    if sid and (current_app.config.get("MW_TOKEN") is not None or _access()):
        dashboard().store.drop_session(sid)
    resp = redirect(url_for("auth.login"))
    resp.delete_cookie(COOKIE)
    return resp
