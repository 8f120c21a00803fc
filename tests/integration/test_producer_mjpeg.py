"""HTTP cameras on a real socket: an MJPEG camera that goes away for 10 s and comes back, snapshot URLs, stalls.

`MjpegServer` (an HTTP MJPEG camera in a thread) is also used by the other producer tests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import pytest

from maskwatch.procs import free_port, wait_for
from maskwatch.site import CameraConfig
from maskwatch.store import Store
from producer.scene import compose
from producer.settings import ProducerSettings
from producer.sources.base import Captured, SourceError
from producer.sources.http import HttpSource

BOUNDARY = "camframe"


def small_jpeg(t: float = 0.0, size: tuple[int, int] = (160, 120)) -> bytes:
    ok, buf = cv2.imencode(".jpg", compose("mixed", t, *size), [cv2.IMWRITE_JPEG_QUALITY, 70])
    assert ok
    return buf.tobytes()


class MjpegServer:
    """An HTTP camera: `/video` is MJPEG at `fps`, `/snapshot.jpg` one JPEG, `/stall` sends headers and then
    nothing, `/clip.avi` a video file for FFmpeg. `stop()` closes the listener and every open stream; `start()` brings it back on the same port."""

    def __init__(self, fps: float = 10.0, content_length: bool = True) -> None:
        self.fps = fps
        self.content_length = content_length
        self.port = free_port()
        self.jpegs = [small_jpeg(t) for t in (0.0, 1.0, 2.0)]
        self.video = b""  # served at /clip.avi (and a third of it, then silence, at /clip-stall.avi)
        self.parts_sent = 0
        self.connections = 0
        self._closing = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def url(self, path: str = "/video") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's signature
                return None

            def do_GET(self) -> None:  # noqa: N802 - stdlib's name
                server.connections += 1
                if self.path == "/snapshot.jpg":
                    body = server.jpegs[server.parts_sent % len(server.jpegs)]
                    server.parts_sent += 1
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if self.path in ("/clip.avi", "/clip-stall.avi"):
                    self.send_response(200)
                    self.send_header("Content-Type", "video/x-msvideo")
                    self.send_header("Content-Length", str(len(server.video)))
                    self.end_headers()
                    stall = self.path == "/clip-stall.avi"
                    body = server.video[: len(server.video) // 3] if stall else server.video
                    step = max(1, len(body) // 40)
                    for i in range(0, len(body), step):  # paced like a live stream, ~4 s in all
                        try:
                            self.wfile.write(body[i : i + step])
                            self.wfile.flush()
                        except OSError:
                            return
                        if server._closing.wait(0.1):
                            return
                    if stall:
                        server._closing.wait()
                    return
                if self.path not in ("/video", "/stall"):
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.end_headers()
                if self.path == "/stall":
                    server._closing.wait()
                    return
                i = 0
                while not server._closing.is_set():
                    body = server.jpegs[i % len(server.jpegs)]
                    head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                    if server.content_length:
                        head += f"Content-Length: {len(body)}\r\n"
                    try:
                        self.wfile.write(head.encode() + b"\r\n" + body + b"\r\n")
                        self.wfile.flush()
                    except OSError:
                        return
                    server.parts_sent += 1
                    i += 1
                    server._closing.wait(1.0 / server.fps)

        self._closing.clear()
        httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._closing.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)


@pytest.fixture
def camera_server() -> Iterator[MjpegServer]:
    srv = MjpegServer()
    srv.start()
    yield srv
    srv.stop()


def run_producer_thread(settings: ProducerSettings) -> tuple[threading.Thread, threading.Event, list[int]]:
    """The producer in a thread of this process (its cameras' states are read back through Redis)."""
    from producer.app import run

    stop = threading.Event()
    rc: list[int] = []
    t = threading.Thread(target=lambda: rc.append(run(settings, stop)), name="producer-under-test", daemon=True)
    t.start()
    return t, stop, rc


def _collect(src: HttpSource, n: int) -> list[Captured]:
    """Read `n` frames from an open source, polling as a camera's sampler does."""
    got: list[Captured] = []

    def more() -> bool:
        cap = src.read(0)
        if cap is not None:
            got.append(cap)
        return len(got) >= n

    wait_for(more, 10, f"{n} frames", interval_s=0.02)
    return got


def _info(store: Store, cid: str) -> dict[str, str]:
    return store.camera_info(cid)


@pytest.mark.timeout(120)
def test_mjpeg_camera_goes_away_and_comes_back(
    kafka: str, redis_url: str, names: dict[str, str], topic: str, tmp_path: Path, camera_server: MjpegServer
) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(
        f"site: t\ncameras:\n  - {{id: door, source: '{camera_server.url()}', fps: 5, read_timeout_s: 2, open_timeout_s: 2}}\n"
    )
    settings = ProducerSettings(
        kafka=kafka,
        redis_url=redis_url,
        topic=topic,
        redis_prefix=names["redis_prefix"],
        site_file=str(site),
        status_interval_s=0.5,
        reconnect_max_s=2.0,
        offline_after_s=30.0,
    )
    store = Store.from_url(redis_url, names["redis_prefix"])
    thread, stop, rc = run_producer_thread(settings)
    try:
        wait_for(lambda: int(_info(store, "door").get("sent", 0) or 0) >= 5, 30, "frames from the MJPEG camera")
        info = _info(store, "door")
        assert info["status"] == "online"
        assert info["resolution"] == "160x120" and info["source"] == camera_server.url()
        assert abs(int(info["last_capture_ms"]) - time.time() * 1000) < 5000

        camera_server.stop()
        went_down = time.monotonic()
        wait_for(lambda: _info(store, "door").get("status") == "reconnecting", 10, "status reconnecting")
        assert time.monotonic() - went_down < 6, "a dead stream is noticed within the read timeout"
        sent_down = int(_info(store, "door")["sent"])
        stop.wait(10 - (time.monotonic() - went_down))  # the camera stays away for 10 s
        info = _info(store, "door")
        assert info["status"] == "reconnecting" and int(info["sent"]) == sent_down
        assert int(info["reconnects"]) >= 2, info

        camera_server.start()
        wait_for(lambda: _info(store, "door").get("status") == "online", 15, "status online again")
        wait_for(lambda: int(_info(store, "door")["sent"]) >= sent_down + 5, 15, "frames to resume")
        info = _info(store, "door")
        assert int(info["dropped_broker"]) == 0 and int(info["encode_errors"]) == 0
        assert thread.is_alive()
    finally:
        stop.set()
        thread.join(15)
        store.close()
    assert rc == [0]
    assert _info(Store.from_url(redis_url, names["redis_prefix"]), "door")["status"] == "offline"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("content_length", [True, False])
def test_http_source_reads_mjpeg_with_or_without_content_length(content_length: bool) -> None:
    srv = MjpegServer(fps=20, content_length=content_length)
    srv.start()
    src = HttpSource(srv.url(), fps=5, open_timeout_s=2, read_timeout_s=2)
    try:
        src.open()
        assert src.mode == "mjpeg"
        got = _collect(src, 3)
        assert all(c.jpeg is not None and c.jpeg in srv.jpegs for c in got)
    finally:
        src.close()
        srv.stop()


@pytest.mark.timeout(60)
def test_snapshot_url_is_polled_at_the_target_rate(camera_server: MjpegServer) -> None:
    src = HttpSource(camera_server.url("/snapshot.jpg"), fps=4, open_timeout_s=2, read_timeout_s=2)
    try:
        src.open()
        assert src.mode == "snapshot"
        before = camera_server.parts_sent
        t0 = time.monotonic()
        _collect(src, 4)
        rate = (camera_server.parts_sent - before) / (time.monotonic() - t0)
        assert rate < 8, f"snapshots fetched at {rate:.1f}/s for a 4 fps camera"
    finally:
        src.close()


@pytest.mark.timeout(60)
def test_a_stream_that_stalls_fails_within_its_timeouts(camera_server: MjpegServer) -> None:
    src = HttpSource(camera_server.url("/stall"), fps=5, open_timeout_s=1, read_timeout_s=1)
    t0 = time.monotonic()
    with pytest.raises(SourceError):
        src.open()
    assert time.monotonic() - t0 < 4
    src.close()


@pytest.mark.timeout(60)
def test_a_host_that_never_answers_fails_fast() -> None:
    port = free_port()  # nothing listens there
    src = HttpSource(f"http://127.0.0.1:{port}/video", fps=5, open_timeout_s=1, read_timeout_s=1)
    t0 = time.monotonic()
    with pytest.raises(SourceError, match="Connection"):
        src.open()
    assert time.monotonic() - t0 < 3


@pytest.mark.timeout(60)
def test_http_answering_404_is_an_open_failure(camera_server: MjpegServer) -> None:
    src = HttpSource(camera_server.url("/nope"), fps=5, open_timeout_s=1, read_timeout_s=1)
    with pytest.raises(SourceError, match="HTTP 404"):
        src.open()


def test_camera_config_for_http_is_live() -> None:
    cam = CameraConfig(id="c", source="http://user:secret@10.0.0.9/video")
    assert cam.live and cam.kind == "http"
    assert "secret" not in cam.safe_source


def _avi(path: Path, frames: int = 60) -> bytes:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10, (160, 120))
    for i in range(frames):
        w.write(compose("bare", i / 10, 160, 120))
    w.release()
    return path.read_bytes()


@pytest.mark.timeout(60)
def test_other_http_video_goes_through_ffmpeg_and_a_stall_is_noticed(
    camera_server: MjpegServer, tmp_path: Path
) -> None:
    camera_server.video = _avi(tmp_path / "clip.avi")
    src = HttpSource(camera_server.url("/clip.avi"), fps=5, open_timeout_s=3, read_timeout_s=2)
    try:
        src.open()
        assert src.mode == "ffmpeg"
        frames = _collect(src, 2)
        assert all(f.image is not None and f.image.shape == (120, 160, 3) for f in frames)
    finally:
        src.close()
    stalled = HttpSource(camera_server.url("/clip-stall.avi"), fps=5, open_timeout_s=3, read_timeout_s=2)
    try:
        stalled.open()  # the first third is there: frames flow, then the server goes silent
        t0 = time.monotonic()

        def lost() -> bool:
            try:
                stalled.read(0)
            except SourceError:
                return True
            return False

        wait_for(lost, 15, "the stalled stream to be noticed")
        assert time.monotonic() - t0 < 8
    finally:
        stalled.close()


@pytest.mark.timeout(60)
def test_camera_credentials_never_reach_redis_or_the_logs(
    kafka: str, redis_url: str, names: dict[str, str], topic: str, tmp_path: Path, camera_server: MjpegServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secrets = ("s3#cr/t?x", "hunter2", "t0k3n")
    url = camera_server.url(f"/video?password={secrets[1]}&token={secrets[2]}").replace("http://", f"http://admin:{secrets[0]}@")
    site = tmp_path / "site.yaml"
    site.write_text(f"site: t\ncameras:\n  - {{id: door, source: '{url}', fps: 5, read_timeout_s: 2, open_timeout_s: 2}}\n")
    settings = ProducerSettings(
        kafka=kafka, redis_url=redis_url, topic=topic, redis_prefix=names["redis_prefix"], site_file=str(site), status_interval_s=0.5
    )
    store = Store.from_url(redis_url, names["redis_prefix"])
    with caplog.at_level("DEBUG"):
        thread, stop, rc = run_producer_thread(settings)
        try:
            wait_for(lambda: _info(store, "door").get("source"), 30, "the camera's status row")
            wait_for(lambda: int(_info(store, "door").get("sent", 0) or 0) >= 3 or _info(store, "door").get("reconnects"), 30, "a try")
            info = _info(store, "door")
            assert info["source"].startswith("http://admin:***@127.0.0.1:") and "password=***&token=***" in info["source"]
            stored = repr(info) + repr({k: store.r.hgetall(k) for k in store.r.scan_iter(match=names["redis_prefix"] + "*") if store.r.type(k) == b"hash"})
        finally:
            stop.set()
            thread.join(15)
            store.close()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in secrets:
        assert secret not in stored and secret not in logged, secret
