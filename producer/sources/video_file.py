"""A video file as a camera: played in real time at its own frame rate (frames between samples are skipped), looping or once."""

from __future__ import annotations

from pathlib import Path

import cv2

from producer.sources.base import Captured, SourceEnded, SourceError, now_ms

MAX_SKIP = 600  # frames skipped in one read at most (a 10-minute stall is not worth decoding through)


class VideoFileSource:
    """Frame k of the file is shown at k / file_fps seconds; each read returns the frame due at `t`.

    Files that do not say their frame rate are read one frame per sample.
    """

    live = False

    def __init__(self, path: str, loop: bool) -> None:
        self.path = path
        self.loop = loop
        self.cap: cv2.VideoCapture | None = None
        self.file_fps = 0.0
        self.pos = 0  # index of the next frame the capture will return
        self.t0 = 0.0  # `t` at which the current pass started

    def open(self) -> None:
        if not Path(self.path).is_file():
            raise SourceError(f"no such file: {self.path}")
        cap = cv2.VideoCapture(self.path, cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot decode video file {self.path}")
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.file_fps = fps if 0.5 <= fps <= 240 else 0.0
        self.cap, self.pos, self.t0 = cap, 0, 0.0

    def _rewind(self, t: float) -> None:
        assert self.cap is not None
        if not self.loop:
            raise SourceEnded()
        if not self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0):
            raise SourceError(f"cannot rewind {self.path}")
        self.pos, self.t0 = 0, t

    def read(self, t: float) -> Captured:
        if self.cap is None:
            raise SourceError("not open")
        due = int((t - self.t0) * self.file_fps) if self.file_fps else self.pos
        skip = min(max(0, due - self.pos), MAX_SKIP)
        for _ in range(skip):  # grab decodes without converting colours: the cheapest way past unwanted frames
            if not self.cap.grab():
                self._rewind(t)
                break
            self.pos += 1
        ok, frame = self.cap.read()
        if not ok:
            self._rewind(t)
            ok, frame = self.cap.read()
            if not ok:
                raise SourceError(f"no frame in {self.path}")
        self.pos += 1
        return Captured(now_ms(), image=frame)

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None

    def interrupt(self) -> None:
        return None  # reads never block
