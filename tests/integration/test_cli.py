"""The `maskwatch` command against a real Redis."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.timeout(60)
def test_cameras_reload_without_producers_says_so(redis_url: str, names: dict[str, str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "maskwatch.cli", "cameras", "reload", "--redis-url", redis_url, "--redis-prefix", names["redis_prefix"], "--timeout", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "producer" in (out.stdout + out.stderr).lower()


@pytest.mark.timeout(60)
def test_stats_with_no_cameras(redis_url: str, names: dict[str, str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "maskwatch.cli", "stats", "--redis-url", redis_url, "--redis-prefix", names["redis_prefix"]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0
    assert "no cameras yet" in out.stdout
