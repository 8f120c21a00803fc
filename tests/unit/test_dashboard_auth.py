"""Token checks: which credentials a request carries and whether they match."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from dashboard.auth import COOKIE, _safe_next, _without_token, allowed, presented
from dashboard.security import host_name
from dashboard.settings import DashboardSettings
from maskwatch.net import is_loopback

TOKEN = "right-token-1"
app = Flask(__name__)


@pytest.mark.parametrize(
    ("kw", "auth", "how", "ok"),
    [
        ({}, None, None, False),
        ({"headers": {"Authorization": f"Bearer {TOKEN}"}}, None, "bearer", True),
        ({"headers": {"Authorization": f"bearer {TOKEN} "}}, None, "bearer", True),
        ({"headers": {"Authorization": "Bearer nope"}}, None, "bearer", False),
        ({"headers": {"Authorization": f"Basic {TOKEN}"}}, None, None, False),
        ({"query_string": {"token": TOKEN}}, None, "query", True),
        ({"query_string": {"token": ""}}, None, "query", False),
        ({}, {"token": TOKEN}, "auth", True),
        ({}, {"token": 123}, None, False),
    ],
)
def test_credentials(kw: dict[str, Any], auth: dict[str, Any] | None, how: str | None, ok: bool) -> None:
    from flask import request

    with app.test_request_context("/api/cameras", **kw):
        assert presented(request, auth)[0] == how
        assert allowed(TOKEN, request, auth) is ok
        assert allowed(None, request, auth) is True


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (None, "/"),
        ("", "/"),
        ("/cameras/gate-1?window=1h", "/cameras/gate-1?window=1h"),
        ("//evil.example/x", "/"),
        ("https://evil.example/", "/"),
        ("javascript:alert(1)", "/"),
        ("cameras", "/"),
    ],
)
def test_login_only_returns_to_local_paths(target: str | None, expected: str) -> None:
    assert _safe_next(target) == expected


def test_a_cookie_is_presented_as_a_session() -> None:
    from flask import request

    with app.test_request_context("/", headers={"Cookie": f"{COOKIE}=abc"}):
        assert presented(request) == ("cookie", "abc")


@pytest.mark.parametrize(
    ("url", "clean"),
    [
        ("/?token=x", "/"),
        ("/cameras/gate-1?token=x&window=1h", "/cameras/gate-1?window=1h"),
        ("/cameras/gate-1?window=1h&token=x&token=y", "/cameras/gate-1?window=1h"),
    ],
)
def test_a_token_link_redirects_to_the_url_without_it(url: str, clean: str) -> None:
    from flask import request

    with app.test_request_context(url):
        assert _without_token(request) == clean


@pytest.mark.parametrize(
    ("header", "name"),
    [("localhost:5000", "localhost"), ("127.0.0.1", "127.0.0.1"), ("[::1]:5000", "::1"), ("Dash.Example.org", "dash.example.org")],
)
def test_host_name(header: str, name: str) -> None:
    assert host_name(header) == name


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.9.9.9", True), ("::1", True), ("localhost", True), ("0.0.0.0", False), ("::", False),
     ("10.0.0.5", False), ("dash", False), ("model-server.internal", False)],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    """The dashboard needs a token and the model server warns for any host that is not loopback."""
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("kw", "refused"),
    [
        ({}, False),
        ({"host": "0.0.0.0"}, True),
        ({"host": "10.1.2.3"}, True),
        ({"host": "0.0.0.0", "token": "a-long-token"}, False),
        ({"host": "0.0.0.0", "insecure": True}, False),
        ({"host": "::1"}, False),
    ],
)
def test_open_to_the_network_only_with_a_token_or_insecure(kw: dict[str, Any], refused: bool) -> None:
    problem = DashboardSettings(**kw).exposure_problem()
    assert (problem is not None) is refused
    if refused:
        assert "MW_DASHBOARD_TOKEN" in (problem or "") and "--insecure" in (problem or "")


@pytest.mark.parametrize(
    ("kw", "hosts"),
    [
        ({}, {"localhost", "127.0.0.1", "::1"}),
        ({"host": "10.1.2.3", "token": "a-long-token"}, {"localhost", "127.0.0.1", "::1", "10.1.2.3"}),
        ({"host": "0.0.0.0", "token": "a-long-token"}, None),
        ({"allowed_hosts": "Dash.example.org, ops"}, {"dash.example.org", "ops"}),
        ({"allowed_hosts": "*"}, None),
    ],
)
def test_host_allow_list(kw: dict[str, Any], hosts: set[str] | None) -> None:
    assert DashboardSettings(**kw).host_allow_list() == (None if hosts is None else frozenset(hosts))
