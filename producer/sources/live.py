"""Live sources: a grabber thread reads the device as fast as it delivers and keeps only the freshest frame.

The device is touched only by the grabber thread (OpenCV captures are not thread-safe, and a
blocking read can only be abandoned, not interrupted), so a stream that hangs costs its own
thread and never the camera's: `open()` and `read()` answer within their timeouts whatever the
device does.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod

from producer.sources.base import Captured, SourceError

logger = logging.getLogger(__name__)


class Stop(Exception):
    """Raised inside the grabber when the source is being closed."""


class LiveSource(ABC):
    """Subclasses implement `_connect()` and `_grab()` (both run on the grabber thread) and `_release()`."""

    live = True

    def __init__(self, name: str, open_timeout_s: float, read_timeout_s: float) -> None:
        self.name = name
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self._lock = threading.Lock()
        self._fresh = threading.Event()  # set when a frame not yet read is waiting
        self._closing = threading.Event()
        self._latest: Captured | None = None
        self._latest_at = 0.0
        self._error: str | None = None
        self._thread: threading.Thread | None = None
        self.frames_grabbed = 0

    # ---- for subclasses (grabber thread only) -----------------------------------------------

    @abstractmethod
    def _connect(self) -> None:
        """Open the device; raise SourceError (or any OSError) when it cannot."""

    @abstractmethod
    def _grab(self) -> Captured | None:
        """Block until the device's next frame: return it, or None for one that was read but not kept;
        raise SourceError when the device fails."""

    @abstractmethod
    def _release(self) -> None:
        """Release the device (called on the grabber thread as it exits)."""

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    # ---- the protocol -------------------------------------------------------------------------

    def open(self) -> None:
        """Start the grabber and wait (up to the open timeout + a read timeout) for its first frame."""
        if self._thread is not None and self._thread.is_alive():
            raise SourceError(f"{self.name}: the previous connection is still closing")
        self._closing.clear()
        self._fresh.clear()
        self._latest, self._latest_at, self._error = None, 0.0, None
        self._thread = threading.Thread(target=self._run, name=f"grab-{self.name}", daemon=True)
        self._thread.start()
        if not self._fresh.wait(self.open_timeout_s + self.read_timeout_s):
            err = self._error
            self.close()
            raise SourceError(err or f"no frame within {self.open_timeout_s + self.read_timeout_s:.0f}s")
        if self._latest is None:  # woken by a failure or an interrupt, not a frame
            err = self._error
            self.close()
            raise SourceError(err or "interrupted")

    def read(self, t: float) -> Captured | None:
        with self._lock:
            latest, at, err = self._latest, self._latest_at, self._error
            if latest is not None:
                self._latest = None
                self._fresh.clear()
        if latest is not None:
            return latest
        if err is not None:
            raise SourceError(err)
        if at and time.monotonic() - at > self.read_timeout_s:
            raise SourceError(f"no frame for {self.read_timeout_s:.0f}s")
        return None

    def interrupt(self) -> None:
        """Ask the grabber to stop and wake an `open()` that waits for the first frame."""
        self._closing.set()
        self._fresh.set()

    def close(self) -> None:
        """Ask the grabber to stop; it releases the device itself when its current read returns."""
        self._closing.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=0.5)

    # ---- the grabber thread -----------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._connect()
            while not self._closing.is_set():
                cap = self._grab()
                if cap is None:
                    continue
                with self._lock:
                    self._latest = cap
                    self._latest_at = time.monotonic()
                    self.frames_grabbed += 1
                self._fresh.set()
        except Stop:
            pass
        except (SourceError, OSError) as e:
            self._fail(str(e) or type(e).__name__)
        except Exception as e:  # a grabber must report, not vanish: any failure reconnects the camera
            logger.exception("grabber failed source=%s", self.name)
            self._fail(f"{type(e).__name__}: {e}")
        finally:
            try:
                self._release()
            except Exception:  # releasing a broken device may fail too; the thread is ending anyway
                logger.debug("release failed source=%s", self.name, exc_info=True)
        if not self._closing.is_set() and self._error is None:
            self._fail("stream ended")

    def _fail(self, msg: str) -> None:
        with self._lock:
            self._error = msg
        self._fresh.set()  # wake an open() that is waiting
