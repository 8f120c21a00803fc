"""Violation episodes on real parts: scripted frames → Tansu → worker → model server → Redis episodes and live notices."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from kafka import KafkaProducer

from maskwatch.frames import Frame
from maskwatch.procs import wait_for
from maskwatch.store import Store
from producer.scene import compose
from tests.integration.worker_fixtures import KILL_SESSION, Procs, env_for

pytestmark = pytest.mark.slow  # minutes: started first (tests/conftest.py)

CAMERA = "bare-cam"
FPS = 2
STAY_S = 60
SCENE_FRAMES = STAY_S * FPS + 1
EMPTY_FRAMES = 4
GRACE_S = 3


def _jpeg(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return buf.tobytes()


def _send(kafka: str, topic: str, frames: list[Frame]) -> None:
    p = KafkaProducer(bootstrap_servers=[kafka], acks=1, linger_ms=5)
    try:
        for f in frames:
            p.send(topic, key=f.key, value=f.jpeg, headers=f.headers())
        p.flush(timeout=30)
    finally:
        p.close()


def scripted_scene(base: int) -> list[Frame]:
    """Two bare-faced people drift in front of a wall for 60 s of capture time (2 frames/s), then the wall stays
    empty for 2 s (past the grace, so their episodes close)."""
    frames = [
        Frame(CAMERA, _jpeg(compose("bare", i / FPS)), i, base + i * 1000 // FPS, 640, 480, "test")
        for i in range(SCENE_FRAMES)
    ]
    wall = _jpeg(np.full((480, 640, 3), (70, 78, 84), np.uint8))
    after = base + (STAY_S + GRACE_S + 1) * 1000
    return frames + [Frame(CAMERA, wall, SCENE_FRAMES + i, after + i * 500, 640, 480, "test") for i in range(EMPTY_FRAMES)]


def stored_states(store: Store) -> list[str]:
    """The states as the worker wrote them (the API shows a long-past open episode closed; these lie in the past)."""
    return [store.r.hget(store.keys.episode(CAMERA, e["id"]), "state").decode() for e in store.episodes(CAMERA)]


def check_two_episodes(store: Store, base: int) -> list[dict[str, Any]]:
    episodes = store.episodes(CAMERA)
    assert len(episodes) == 2, episodes
    assert stored_states(store) == ["closed", "closed"]
    for ep in episodes:
        assert ep["class"] == "without_mask" and ep["state"] == "closed"
        assert ep["first_ms"] <= base + 2000 and ep["last_ms"] >= base + (STAY_S - 1) * 1000, ep
        assert STAY_S - 3 <= ep["duration_s"] <= STAY_S, ep
        assert sum(ep["votes"].values()) >= SCENE_FRAMES - 10
        assert ep["snapshot_ms"] is not None
        snap = store.snapshot(ep["snapshot"])
        assert snap is not None and snap[:3] == b"\xff\xd8\xff"
    return episodes


@pytest.mark.timeout(420)
def test_a_worker_killed_mid_scene_leaves_still_two_episodes(
    kafka: str, redis_url: str, serving: str, names: dict[str, str], topic: str, logs_dir: Path
) -> None:
    base = int(time.time() * 1000) - 120_000
    frames = scripted_scene(base)
    half = SCENE_FRAMES // 2
    _send(kafka, topic, frames[:half])
    store = Store.from_url(redis_url, names["redis_prefix"])
    env = env_for(
        kafka, redis_url, serving, names, MW_EPISODE_GRACE_S=str(GRACE_S), MW_EPISODE_MIN_FRAMES="3", **KILL_SESSION
    )
    procs = Procs(logs_dir, env)
    try:
        procs.worker("w-first")
        wait_for(lambda: store.totals(CAMERA).frames >= half, 300, "the first worker to count half the scene", interval_s=0.5)
        assert stored_states(store) == ["open", "open"]
        procs["w-first"].kill()  # SIGKILL: its tracks and open episodes in memory are gone
        _send(kafka, topic, frames[half:])
        procs.worker("w-second")
        wait_for(lambda: store.totals(CAMERA).frames >= len(frames), 300, "the second worker to count the rest", interval_s=0.5)
        wait_for(lambda: set(stored_states(store)) == {"closed"}, 30, "the episodes to close")
        # the second worker took the two people's episodes over: still two, each the whole minute
        check_two_episodes(store, base)
    finally:
        rcs = procs.stop_all()
        store.close()
    assert rcs["w-second"] == 0


@pytest.mark.timeout(420)
def test_two_bare_faced_people_staying_a_minute_are_two_episodes(
    kafka: str, redis_url: str, serving: str, names: dict[str, str], topic: str, logs_dir: Path
) -> None:
    # capture times lie in the past so the whole minute is sent at once
    base = int(time.time() * 1000) - 120_000
    frames = scripted_scene(base)
    _send(kafka, topic, frames)

    store = Store.from_url(redis_url, names["redis_prefix"])
    notices = store.r.pubsub(ignore_subscribe_messages=True)
    notices.subscribe(store.keys.updates())
    env = env_for(
        kafka, redis_url, serving, names, MW_EPISODE_GRACE_S=str(GRACE_S), MW_EPISODE_MIN_FRAMES="3"
    )
    procs = Procs(logs_dir, env)
    procs.worker("w-episodes")
    seen: list[dict[str, Any]] = []

    def drain() -> None:
        while (msg := notices.get_message(timeout=0.05)) is not None:
            seen.extend(json.loads(msg["data"]).get("violations", []))

    try:
        wait_for(lambda: store.totals(CAMERA).frames >= len(frames), 300, "the worker to count every frame", interval_s=0.5)
        wait_for(lambda: bool(drain() or [v for v in seen if v["state"] == "closed"]), 30, "the episodes' close notices")
        drain()
        totals = store.totals(CAMERA)
        # per frame, the two people are ~240 bare-face sightings; as episodes they are two
        assert totals.without_mask >= 2 * (SCENE_FRAMES - 10), totals
        episodes = check_two_episodes(store, base)
        # the live notices name the same two episodes: open while they last, then one close each
        ids = {ep["id"] for ep in episodes}
        assert {v["id"] for v in seen} == ids
        assert {v["id"] for v in seen if v["state"] == "open"} == ids
        closes = [v for v in seen if v["state"] == "closed"]
        assert sorted(v["id"] for v in closes) == sorted(ids)
        assert all(len(v["box"]) == 4 for v in seen)
    finally:
        rcs = procs.stop_all()
        notices.close()
        store.close()
    assert rcs == {"w-episodes": 0}
