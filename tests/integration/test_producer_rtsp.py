"""A real RTSP camera (GStreamer's RTSP server serving a clip) through producer, broker, worker and model server; the
camera reboots (down for 20 s): it shows offline with the reason, reconnects with backoff, and counting resumes
without a producer restart."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest

from maskwatch.procs import Child, free_port, py, wait_for
from maskwatch.store import Store
from producer.scene import compose
from tests.integration.worker_fixtures import ROOT, Procs, env_for

SYSTEM_PYTHON = "/usr/bin/python3"  # where Debian installs the GStreamer bindings (python3-gi)
OUTAGE_S = 20.0  # as long as a camera takes to reboot


def make_clip(folder: Path, fps: int = 5) -> Path:
    """A 2-minute MJPEG clip of the demo scene (people drifting, some masked), built with Debian's ffmpeg."""
    folder.mkdir()
    for i in range(20):
        cv2.imwrite(str(folder / f"{i:03d}.jpg"), compose("mixed", i / fps, 320, 240))
    clip = folder / "clip.mkv"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-stream_loop", "29", "-framerate", str(fps),
         "-i", str(folder / "%03d.jpg"), "-c:v", "copy", str(clip)],
        check=True,
        timeout=60,
    )
    return clip


class RtspCamera:
    """The RTSP server process; `stop()` and `start()` again on the same port, as a camera reboots."""

    def __init__(self, clip: Path, port: int, log_dir: Path) -> None:
        self.port, self.log_dir = port, log_dir
        argv = [SYSTEM_PYTHON, str(ROOT / "tests" / "integration" / "rtsp_camera.py"), str(port), str(clip)]
        self.child = Child("rtsp-camera", argv)

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam"

    def start(self) -> None:
        self.child.start(self.log_dir).wait_ready(lambda: "ready" in self.child.log(), 30, "the RTSP server")

    def stop(self) -> None:
        self.child.stop(10)
        self.child.log_path.write_text("")  # the next start's "ready" is its own


@pytest.fixture
def camera(tmp_path: Path, logs_dir: Path) -> Iterator[RtspCamera]:
    cam = RtspCamera(make_clip(tmp_path / "clip"), free_port(), logs_dir)
    cam.start()
    yield cam
    cam.stop()


@pytest.mark.timeout(300)
def test_an_rtsp_camera_that_reboots_shows_why_it_is_offline_and_comes_back_without_a_producer_restart(
    camera: RtspCamera, kafka: str, redis_url: str, serving: str, names: dict[str, str], topic: str,
    tmp_path: Path, logs_dir: Path,
) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(
        f"site: t\ncameras:\n  - {{id: door-1, source: '{camera.url}', fps: 5, open_timeout_s: 3, read_timeout_s: 3}}\n"
    )
    env = env_for(
        kafka, redis_url, serving, names,
        MW_OFFLINE_AFTER_S="8", MW_RECONNECT_MAX_S="4", MW_STATUS_INTERVAL_S="0.5",
    )
    procs = Procs(logs_dir, env)
    store = Store.from_url(redis_url, names["redis_prefix"])
    try:
        procs.worker("w-rtsp")
        producer = procs.start("producer", py("producer", "--site", str(site)))

        def info() -> dict[str, str]:
            assert producer.alive(), f"producer exited rc={producer.returncode}"
            return store.camera_info("door-1")

        def counted() -> int:
            return store.totals("door-1").frames

        wait_for(lambda: info().get("status") == "online" and counted() >= 10, 180, "door-1 online and counted")
        producer_id = info()["producer"]

        # the camera reboots: down for OUTAGE_S
        camera.stop()
        down_at = time.monotonic()
        # offline after read_timeout_s (3) + offline_after_s (8); a loaded machine may take longer: the outage then does
        wait_for(lambda: info().get("status") == "offline", 60, "door-1 offline")
        why = info()["last_error"]
        assert why == f"cannot open {camera.url}: connection refused by 127.0.0.1:{camera.port}", why
        reconnects_down = int(info().get("reconnects", "0"))
        remaining = OUTAGE_S - (time.monotonic() - down_at)
        if remaining > 0:
            time.sleep(remaining)  # the rest of the reboot: the scenario's length, not a wait for a condition
        at_restart = counted()
        camera.start()

        wait_for(lambda: info().get("status") == "online", 60, "door-1 back online")
        wait_for(lambda: counted() >= at_restart + 10, 60, "counting to resume")
        row = info()
        assert row["producer"] == producer_id and producer.alive()  # the same producer run throughout
        reconnects = int(row.get("reconnects", "0"))
        # with backoff (0.5 s doubling to 4 s) a 20 s outage takes a handful of attempts, not hundreds
        assert 3 <= reconnects <= 25, reconnects
        assert reconnects >= reconnects_down
    finally:
        rcs = procs.stop_all()
        store.close()
    assert rcs == {"w-rtsp": 0, "producer": 0}, rcs
