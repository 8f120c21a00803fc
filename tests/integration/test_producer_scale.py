"""Sixteen cameras in one producer at 5 fps, one of them stalled and one that never answers: the others keep their rate."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from maskwatch.procs import Child, free_port, py, wait_for
from maskwatch.store import Store
from tests.integration.test_producer_mjpeg import MjpegServer

ROOT = Path(__file__).resolve().parents[2]
FAST = [f"fast-{i:02d}" for i in range(14)]
FPS = 5.0
WINDOW_S = 6.0


@pytest.fixture
def stalled_camera() -> Iterator[MjpegServer]:
    srv = MjpegServer()
    srv.start()
    yield srv
    srv.stop()


@pytest.mark.timeout(150)
def test_a_stalled_camera_does_not_slow_the_others(
    kafka: str,
    redis_url: str,
    names: dict[str, str],
    topic: str,
    tmp_path: Path,
    logs_dir: Path,
    stalled_camera: MjpegServer,
) -> None:
    lines = [f"  - {{id: {c}, source: 'synthetic:mixed@320x240', fps: {FPS}}}\n" for c in FAST]
    lines.append(
        f"  - {{id: stalled, source: '{stalled_camera.url('/stall')}', fps: {FPS}, open_timeout_s: 2, read_timeout_s: 2}}\n"
    )
    lines.append(
        f"  - {{id: silent, source: 'rtsp://127.0.0.1:{free_port()}/none', fps: {FPS}, open_timeout_s: 2, read_timeout_s: 2}}\n"
    )
    site = tmp_path / "site.yaml"
    site.write_text("site: t\ncameras:\n" + "".join(lines))
    env = {
        "MW_KAFKA": kafka,
        "MW_REDIS_URL": redis_url,
        "MW_TOPIC": topic,
        "MW_REDIS_PREFIX": names["redis_prefix"],
        "MW_STATUS_INTERVAL_S": "0.5",
        "MW_OFFLINE_AFTER_S": "3",
    }
    proc = Child(f"producer-scale-{topic}", py("producer", "--site", str(site)), env, cwd=ROOT).start(logs_dir)
    store = Store.from_url(redis_url, names["redis_prefix"])

    def sent() -> dict[str, int]:
        assert proc.alive(), f"producer exited rc={proc.returncode}"
        return {c: int(store.camera_info(c).get("sent", "0") or 0) for c in FAST}

    try:
        wait_for(lambda: min(sent().values()) >= 10, 60, "every fast camera to send")
        wait_for(
            lambda: store.camera_info("stalled").get("status") in ("reconnecting", "offline"),
            20,
            "the stalled camera to be seen down",
        )
        before, t0 = sent(), time.monotonic()
        time.sleep(WINDOW_S)  # a measurement window, not a wait for a condition
        after, span = sent(), time.monotonic() - t0
        rates = {c: (after[c] - before[c]) / span for c in FAST}
        assert min(rates.values()) >= 0.7 * FPS, rates
        for cid in ("stalled", "silent"):
            info = store.camera_info(cid)
            assert info["status"] in ("reconnecting", "offline") and int(info["sent"]) == 0, info
        wait_for(lambda: store.camera_info("silent").get("status") == "offline", 20, "the silent camera shown offline")
        hb = next(iter(store.heartbeats("producer").values()))
        assert hb["cameras"] == "16" and int(hb["online"]) == len(FAST)
        proc.send_signal(signal.SIGTERM, group=False)  # the producer stops its FFmpeg readers itself
        assert proc.finish(15) == 0
    finally:
        proc.stop(5)
        store.close()
