"""End to end on real parts: producer → Tansu → worker → model server (gRPC) → Redis → dashboard Socket.IO."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from maskwatch.procs import py, wait_for
from maskwatch.store import Store
from producer.scene import compose
from tests.integration.worker_fixtures import Procs, env_for

FACES_FRAMES = 8
EMPTY_FRAMES = 6


def _folder(path: Path, images: list[np.ndarray]) -> Path:
    path.mkdir()
    for i, img in enumerate(images):
        cv2.imwrite(str(path / f"{i:04d}.jpg"), img)
    return path


@pytest.mark.timeout(420)
def test_frames_flow_from_camera_to_dashboard(
    kafka: str, redis_url: str, serving: str, names: dict[str, str], topic: str, tmp_path: Path, logs_dir: Path
) -> None:
    from dashboard.app import close_app, create_app
    from dashboard.settings import DashboardSettings

    faces_dir = _folder(tmp_path / "faces", [compose("mixed", t) for t in np.linspace(0, 6, FACES_FRAMES)])
    wall = np.full((480, 640, 3), (70, 78, 84), np.uint8)
    empty_dir = _folder(tmp_path / "empty", [wall.copy() for _ in range(EMPTY_FRAMES)])
    site = tmp_path / "site.yaml"
    site.write_text(
        f"""site: test
cameras:
  - {{id: faces-cam, name: Faces, zone: z1, source: "{faces_dir}", fps: 10, loop: false}}
  - {{id: empty-cam, name: Empty, zone: z2, source: "{empty_dir}", fps: 10, loop: false}}
"""
    )
    # a cold model server on a shared machine can be slow: this test checks exact counts, not freshness
    env = env_for(kafka, redis_url, serving, names)
    store = Store.from_url(redis_url, names["redis_prefix"])
    settings = DashboardSettings(redis_url=redis_url, redis_prefix=names["redis_prefix"], port=0)
    app, sio = create_app(settings, store)
    client = sio.test_client(app, namespace="/live")
    assert client.is_connected("/live")
    wait_for(lambda: store.r.pubsub_numsub(store.keys.updates())[0][1] > 0, 30, "the live emitter's subscription")

    procs = Procs(logs_dir, env)
    worker = procs.worker("w-test")
    try:
        # the worker starts from the end of the topic for a new deployment: wait until it owns partitions
        def assigned() -> bool:
            hb = store.heartbeats("worker").get("w-test", {})
            return hb.get("partitions", "[]") not in ("", "[]")

        worker.wait_ready(assigned, 90, "the worker to join the group")
        prod = procs.start("producer-pipeline", py("producer", "--site", str(site)))
        assert prod.finish(120) == 0, prod.log()[-2000:]

        def counted() -> bool:
            return store.totals("faces-cam").frames >= FACES_FRAMES and store.totals("empty-cam").frames >= EMPTY_FRAMES

        wait_for(counted, 180, "the worker to count every frame", interval_s=0.5)
        faces, empty = store.totals("faces-cam"), store.totals("empty-cam")
        assert faces.frames == FACES_FRAMES and empty.frames == EMPTY_FRAMES
        assert faces.invalid == faces.dropped_stale == empty.invalid == 0
        # the mixed scene shows one masked and one bare face in every frame
        assert (faces.faces, faces.with_mask, faces.without_mask) == (2 * FACES_FRAMES, FACES_FRAMES, FACES_FRAMES), faces
        assert empty.faces == 0, empty
        assert store.latest_jpeg("faces-cam") is not None
        info = store.camera_info("faces-cam")
        assert info["name"] == "Faces" and info["zone"] == "z1"

        def pushed() -> list[dict[str, Any]]:
            return [
                e["args"][0]
                for e in client.get_received("/live")
                if e["name"] == "camera_update" and e["args"] and e["args"][0].get("camera") == "faces-cam"
            ]

        updates: list[dict[str, Any]] = []
        wait_for(lambda: bool(updates.extend(pushed()) or updates and updates[-1]["totals"]["frames"] == FACES_FRAMES), 30, "a live camera_update")
        last = updates[-1]
        assert last["window"]["with_mask"] == faces.with_mask
        assert last["compliance"] == 0.5

        assert worker.stop(15) == 0
    finally:
        procs.stop_all()
        client.disconnect(namespace="/live")
        close_app(app)
        store.close()
