"""HTTP hardening of every answer: trusted proxy hops (ProxyFix), the Host allow-list and the security headers."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, g, jsonify, request
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wrappers import Response

from dashboard.settings import DashboardSettings

logger = logging.getLogger(__name__)

# No inline script anywhere (pages load their scripts from /static); styles may be inline (style attributes).
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}
HSTS = "max-age=31536000"
# health probes address the pod or container by IP; the bare liveness answer shows nothing
OPEN_TO_ANY_HOST = frozenset({"api.healthz"})


def host_name(host_header: str) -> str:
    """The name part of a Host header, lower case, without port or IPv6 brackets."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def install(app: Flask, settings: DashboardSettings) -> None:
    """Believe `trusted_proxies` hops of X-Forwarded-*, refuse Hosts off the allow-list, add the headers."""
    if settings.trusted_proxies:
        hops = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops)  # type: ignore[method-assign]
    allowed = settings.host_allow_list()

    if allowed is not None:

        @app.before_request
        def _check_host() -> Any:
            name = host_name(request.host)
            if name in allowed or request.endpoint in OPEN_TO_ANY_HOST:
                return None
            g.mw_host_refused = True
            logger.warning("request refused, host not allowed host=%s remote=%s", name[:100], request.remote_addr)
            resp = jsonify(error="host not allowed", detail="set MW_DASHBOARD_ALLOWED_HOSTS to serve this name")
            resp.status_code = 400
            return resp

    @app.after_request
    def _headers(resp: Response) -> Response:  # registered before CORS's, so it runs after it
        if g.get("mw_host_refused"):
            resp.headers.pop("Access-Control-Allow-Origin", None)
        for name, value in SECURITY_HEADERS.items():
            resp.headers.setdefault(name, value)
        if request.is_secure:
            resp.headers.setdefault("Strict-Transport-Security", HSTS)
        return resp
