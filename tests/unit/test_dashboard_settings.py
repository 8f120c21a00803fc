"""DashboardSettings: defaults, environment names, bounds, and the CLI's flags over the environment."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from dashboard.__main__ import parse_settings
from dashboard.settings import DashboardSettings

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.upper().startswith("MW_") or name.upper() in ("HOST", "PORT", "TOKEN"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    s = DashboardSettings()
    assert (s.host, s.port, s.window_minutes, s.token, s.message_queue) == ("127.0.0.1", 5000, 15, None, False)
    assert s.camera_update_hz == 4.0 and s.redis_url == "redis://127.0.0.1:6379/0"


def test_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MW_DASHBOARD_PORT", "6001")
    monkeypatch.setenv("MW_DASHBOARD_TOKEN", "a-long-token")
    monkeypatch.setenv("MW_DASHBOARD_WINDOW_MINUTES", "60")
    monkeypatch.setenv("MW_REDIS_URL", "redis://db:6379/1")
    monkeypatch.setenv("PORT", "1")  # someone else's variable
    monkeypatch.setenv("HOST", "example.org")
    s = DashboardSettings()
    assert (s.port, s.host, s.window_minutes, s.redis_url) == (6001, "127.0.0.1", 60, "redis://db:6379/1")
    assert s.token_value() == "a-long-token" and "a-long-token" not in repr(s)


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"port": 70000}, "port"),
        ({"window_minutes": 0}, "window_minutes"),
        ({"window_minutes": 1441}, "window_minutes"),
        ({"camera_update_hz": 5}, "camera_update_hz"),
        ({"camera_update_hz": 0}, "camera_update_hz"),
        ({"token": "short"}, "at least 8"),
        ({"warn_threshold": 0.95, "good_threshold": 0.9}, "warn_threshold"),
        ({"leader_ttl_s": 1}, "leader_ttl_s"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_values_are_refused(values: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        DashboardSettings(**values)


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MW_DASHBOARD_PORT", "6001")
    monkeypatch.setenv("MW_REDIS_URL", "redis://env:6379/0")
    s = parse_settings(["--port", "7001", "--message-queue", "--window-minutes", "5"])
    assert (s.port, s.message_queue, s.window_minutes, s.redis_url) == (7001, True, 5, "redis://env:6379/0")
    assert parse_settings([]).port == 6001


def test_no_token_flag() -> None:
    with pytest.raises(SystemExit):
        parse_settings(["--token", "on-the-command-line"])


def test_site_file_and_origins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MW_SITE_FILE", "/etc/maskwatch/site.yaml")  # the producer's variable: one file for both
    monkeypatch.setenv("MW_DASHBOARD_CORS_ORIGINS", "https://ops.example.org, http://wall.example:8080/")
    s = DashboardSettings()
    assert s.site_file == "/etc/maskwatch/site.yaml"
    assert s.allowed_origins() == ["https://ops.example.org", "http://wall.example:8080"]
    s = parse_settings(["--site", "other.yaml", "--cors-origins", "https://a.example"])
    assert s.site_file == "other.yaml" and s.allowed_origins() == ["https://a.example"]
    assert DashboardSettings(cors_origins="").allowed_origins() == []


@pytest.mark.parametrize("origins", ["*", "ops.example.org", "https://ops.example.org/path", "ftp://x.example"])
def test_bad_origins_are_refused(origins: str) -> None:
    with pytest.raises(ValidationError, match="cors_origins"):
        DashboardSettings(cors_origins=origins)


def test_empty_token_means_no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MW_DASHBOARD_TOKEN", "")
    from dashboard.settings import DashboardSettings

    assert DashboardSettings().token_value() is None
