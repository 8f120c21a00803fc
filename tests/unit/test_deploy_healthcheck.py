"""deploy/healthcheck.py's verdicts: which heartbeat is this container's, and when it counts as fresh."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_800_000_000_000


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_healthcheck", ROOT / "deploy" / "healthcheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hc = load()


def beat(age_s: float, **fields: str) -> dict[str, str]:
    return {"ts_ms": str(int(NOW - age_s * 1000)), **fields}


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "beats, worker_id, healthy, why",
    [
        ({"web-1-7": beat(1)}, None, True, ""),
        ({"web-1-7": beat(14)}, None, True, ""),
        ({"web-1-7": beat(16)}, None, False, "older than 15s"),
        ({"web-12-7": beat(1)}, None, False, "no worker heartbeat for web-1-*"),  # another host's prefix
        ({}, None, False, "no worker heartbeat"),
        ({"web-1-7": beat(30), "web-1-9": beat(2)}, None, True, ""),  # restarted process in the same container
        ({"pod-a": beat(1)}, "pod-a", True, ""),
        ({"pod-a": beat(1)}, "pod-b", False, "no worker heartbeat for pod-b"),
        ({"web-1-7": {"ts_ms": "soon"}}, None, False, "older than"),
    ],
)
def test_worker_verdict(beats: dict[str, dict[str, str]], worker_id: str | None, healthy: bool, why: str) -> None:
    verdict = hc.worker_verdict(beats, "web-1", worker_id, NOW, 15.0)
    assert (verdict is None) is healthy
    assert healthy or why in verdict


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "beats, healthy, why",
    [
        ({"p1": beat(1, host="web-1", cameras="3", alive="3")}, True, ""),
        ({"p1": beat(1, host="web-1", cameras="3", alive="0")}, False, "no camera thread is alive"),
        ({"p1": beat(1, host="web-1", cameras="0", alive="0")}, True, ""),  # an empty shard waits for a reload
        ({"p1": beat(20, host="web-1", cameras="3", alive="3")}, False, "no fresh producer heartbeat"),
        ({"p1": beat(1, host="web-2", cameras="3", alive="3")}, False, "no fresh producer heartbeat"),
        ({"p1": beat(1, host="web-2", alive="3"), "p2": beat(1, host="web-1", alive="1")}, True, ""),
        ({"p1": beat(1, cameras="2", alive="2")}, True, ""),  # a producer that does not say its host
        ({}, False, "no fresh producer heartbeat"),
    ],
)
def test_producer_verdict(beats: dict[str, dict[str, str]], healthy: bool, why: str) -> None:
    verdict = hc.producer_verdict(beats, "web-1", NOW, 15.0)
    assert (verdict is None) is healthy
    assert healthy or why in verdict
