"""The one protocol every camera source speaks: `open()`, `read(t)` → the next `Captured` frame or None, `close()`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class SourceError(RuntimeError):
    """The source cannot be opened or stopped answering; the camera reconnects with backoff."""


class SourceEnded(Exception):
    """A play-once source has no more frames."""


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, eq=False)
class Captured:
    """One frame as the source gave it: decoded pixels (BGR) or the camera's own JPEG, and when it was captured.

    A camera's JPEG is kept undecoded until the encoder takes it, so frames that are
    dropped (or never sampled) cost no decode.
    """

    ts_ms: int
    image: np.ndarray | None = None
    jpeg: bytes | None = None

    def __post_init__(self) -> None:
        if (self.image is None) == (self.jpeg is None):
            raise ValueError("a captured frame holds exactly one of image or jpeg")


class Source(Protocol):
    """A camera. `live` sources run on their own clock (the camera samples them); the others are read on demand."""

    live: bool

    def open(self) -> None:
        """Connect; raises SourceError within the source's open timeout when it cannot."""
        ...

    def read(self, t: float) -> Captured | None:
        """The frame for time `t` (seconds since open): the freshest one not yet read, or None when there is
        none yet; raises SourceError (lost, stalled) or SourceEnded (a play-once source is done). Never blocks
        longer than a frame decode."""
        ...

    def close(self) -> None:
        """Release the device; safe to call twice and after a failed open."""
        ...

    def interrupt(self) -> None:
        """From another thread, when the camera stops: make a pending `open()` return at once. Must not block."""
        ...
