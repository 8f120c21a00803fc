"""Token checks: which credentials a request carries and whether they match."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from dashboard.auth import COOKIE, _safe_next, allowed, presented, session_value

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
        ({"headers": {"Cookie": f"{COOKIE}={session_value(TOKEN)}"}}, None, "cookie", True),
        ({"headers": {"Cookie": f"{COOKIE}={TOKEN}"}}, None, "cookie", False),  # the raw token is not a session
        ({"headers": {"Cookie": f"{COOKIE}={session_value('other-token')}"}}, None, "cookie", False),
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


def test_session_value_is_not_the_token() -> None:
    assert session_value(TOKEN) != TOKEN and session_value(TOKEN) == session_value(TOKEN)
    assert session_value(TOKEN) != session_value(TOKEN + "x")
