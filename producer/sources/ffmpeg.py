"""RTSP and HTTP(S) video streams through OpenCV's FFmpeg backend, and webcams by index, as live sources."""

from __future__ import annotations

import time
from collections.abc import Callable

import cv2

from maskwatch.site import redact
from producer.sources.base import Captured, SourceError, now_ms
from producer.sources.live import LiveSource


def open_stream(url: str, open_timeout_s: float, read_timeout_s: float) -> cv2.VideoCapture:
    """An FFmpeg capture with FFmpeg's own open and read timeouts, so a dead stream fails within seconds."""
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
        int(open_timeout_s * 1000),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC,
        int(read_timeout_s * 1000),
    ]
    cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
    if not cap.isOpened():
        cap.release()
        raise SourceError(f"cannot open {redact(url)}")
    return cap


class CaptureReader:
    """Reads an OpenCV capture on the grabber thread: grabs every frame the device delivers (keeping the
    stream drained) but converts only those that may be sampled, at most two per sampling period, so a
    30 fps camera sampled at 5 fps pays 10 colour conversions a second, not 30."""

    def __init__(self, name: str, opener: Callable[[], cv2.VideoCapture], fps: float) -> None:
        self.name = name
        self.opener = opener
        self.min_interval_s = 0.5 / fps
        self.cap: cv2.VideoCapture | None = None
        self._last_retrieve = 0.0

    def connect(self) -> None:
        self.cap = self.opener()
        self._last_retrieve = 0.0

    def grab(self) -> Captured | None:
        if self.cap is None:
            raise SourceError(f"{self.name}: not open")
        if not self.cap.grab():
            raise SourceError(f"{self.name}: read failed or timed out")
        now = time.monotonic()
        if now - self._last_retrieve < self.min_interval_s:
            return None
        ok, frame = self.cap.retrieve()
        if not ok or frame is None:
            raise SourceError(f"{self.name}: frame could not be decoded")
        self._last_retrieve = now
        return Captured(now_ms(), image=frame)

    def release(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class StreamSource(LiveSource):
    """`rtsp(s)://…` through FFmpeg."""

    def __init__(self, url: str, fps: float, open_timeout_s: float, read_timeout_s: float) -> None:
        super().__init__(redact(url), open_timeout_s, read_timeout_s)
        self.reader = CaptureReader(self.name, lambda: open_stream(url, open_timeout_s, read_timeout_s), fps)

    def _connect(self) -> None:
        self.reader.connect()

    def _grab(self) -> Captured | None:
        return self.reader.grab()

    def _release(self) -> None:
        self.reader.release()


def _open_webcam(index: int) -> cv2.VideoCapture:
    cap = cv2.VideoCapture(index)
    if not cap.isOpened():
        cap.release()
        raise SourceError(f"cannot open webcam {index}")
    return cap


class WebcamSource(LiveSource):
    """A local camera by index (`webcam:0`), through OpenCV's default backend (V4L2 on Linux)."""

    def __init__(self, index: int, fps: float, open_timeout_s: float, read_timeout_s: float) -> None:
        super().__init__(f"webcam:{index}", open_timeout_s, read_timeout_s)
        self.reader = CaptureReader(self.name, lambda: _open_webcam(index), fps)

    def _connect(self) -> None:
        self.reader.connect()

    def _grab(self) -> Captured | None:
        return self.reader.grab()

    def _release(self) -> None:
        self.reader.release()
