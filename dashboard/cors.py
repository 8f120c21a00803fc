"""Which browser origins may use the dashboard: its own, plus MW_DASHBOARD_CORS_ORIGINS; one policy for REST and Socket.IO.

A request without an `Origin` header (curl, probes, the CLI, a same-origin GET) is not a cross-origin
request and passes. A request from an allowed origin gets CORS headers (and its preflight an answer); any
other origin gets 403 JSON under /api/, and Socket.IO refuses its handshake.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from flask import Flask, Response, jsonify, request

ALLOW_METHODS = "GET, POST, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type"
PREFLIGHT_MAX_AGE_S = "600"


def _first(v: str) -> str:
    return v.split(",")[0].strip().lower()


def own_origins(environ: Mapping[str, Any]) -> set[str]:
    """The origins this request reached the dashboard as: its Host, and what a reverse proxy says it forwarded."""
    scheme = str(environ.get("wsgi.url_scheme", "http")).lower()
    host = str(environ.get("HTTP_HOST", "")).lower()
    out = {f"{scheme}://{host}"} if host else set()
    fwd_proto = environ.get("HTTP_X_FORWARDED_PROTO")
    fwd_host = environ.get("HTTP_X_FORWARDED_HOST")
    if host and (fwd_proto or fwd_host):
        out.add(f"{_first(fwd_proto) if fwd_proto else scheme}://{_first(fwd_host) if fwd_host else host}")
    return out


class OriginPolicy:
    """Allowed origins: the dashboard's own plus `extra` (scheme://host[:port], lower case, no trailing slash)."""

    def __init__(self, extra: Iterable[str]) -> None:
        self.extra = frozenset(o.lower().rstrip("/") for o in extra)

    def allows(self, origin: str | None, environ: Mapping[str, Any]) -> bool:
        if origin is None:
            return True
        o = origin.lower().rstrip("/")
        return o in self.extra or o in own_origins(environ)

    def socketio_check(self, origin: str | None, environ: Mapping[str, Any] | None = None) -> bool:
        """For Socket.IO's `cors_allowed_origins` (engine.io calls it with the Origin and the WSGI environ)."""
        return self.allows(origin, environ or {})


def install(app: Flask, policy: OriginPolicy) -> None:
    """Refuse /api/ calls from origins outside `policy`; add CORS headers for the allowed foreign ones."""

    @app.before_request
    def _check_origin() -> Any:
        if not request.path.startswith("/api/"):
            return None
        origin = request.headers.get("Origin")
        if not policy.allows(origin, request.environ):
            resp = jsonify(error="origin not allowed", origin=origin, detail="add it to MW_DASHBOARD_CORS_ORIGINS")
            resp.status_code = 403
            return resp
        if request.method == "OPTIONS" and origin is not None:
            return Response(status=204)
        return None

    @app.after_request
    def _cors_headers(resp: Response) -> Response:
        origin = request.headers.get("Origin")
        if origin is not None and request.path.startswith("/api/") and policy.allows(origin, request.environ):
            resp.headers["Access-Control-Allow-Origin"] = origin
            resp.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
            resp.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
            resp.headers["Access-Control-Max-Age"] = PREFLIGHT_MAX_AGE_S
            resp.vary.add("Origin")
        return resp
