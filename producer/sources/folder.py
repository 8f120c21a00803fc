"""A folder of images as a camera: one image per frame in name order, looping or once."""

from __future__ import annotations

import logging
from pathlib import Path

from producer.sources.base import Captured, SourceEnded, SourceError, now_ms

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
JPEG_SUFFIXES = frozenset({".jpg", ".jpeg"})


class FolderSource:
    """Reads the next image at each sample; JPEG files are handed on undecoded (the encoder decides)."""

    live = False

    def __init__(self, path: str, loop: bool) -> None:
        self.path = Path(path)
        self.loop = loop
        self.files: list[Path] = []
        self.i = 0

    def open(self) -> None:
        if not self.path.is_dir():
            raise SourceError(f"not a folder: {self.path}")
        self.files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.files:
            raise SourceError(f"no images in {self.path}")
        self.i = 0

    def read(self, t: float) -> Captured:
        import cv2

        for _ in range(len(self.files)):
            if self.i >= len(self.files):
                if not self.loop:
                    raise SourceEnded()
                self.i = 0
            p = self.files[self.i]
            self.i += 1
            try:
                if p.suffix.lower() in JPEG_SUFFIXES:
                    return Captured(now_ms(), jpeg=p.read_bytes())
                img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            except OSError as e:
                logger.warning("unreadable image skipped path=%s error=%s", p, e.strerror)
                continue
            if img is not None:
                return Captured(now_ms(), image=img)
            logger.warning("unreadable image skipped path=%s", p)
        if self.i >= len(self.files) and not self.loop:
            raise SourceEnded()
        raise SourceError(f"no readable image in {self.path}")

    def close(self) -> None:
        self.files = []

    def interrupt(self) -> None:
        return None  # reads never block
