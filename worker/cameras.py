"""Which cameras the worker counts: the site's, registered in Redis by the producer (any id in open registration)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)


class CameraRegistry:
    """The known camera ids, read from Redis at most once per `min_refresh_s` (and every `max_age_s`).

    A frame from an id not known yet triggers a re-read (a camera just added to the site is registered by its
    producer before its first frame), but a flood of made-up ids costs at most one read per `min_refresh_s`.
    """

    def __init__(
        self,
        read: Callable[[], list[str]],
        open_registration: bool,
        min_refresh_s: float = 1.0,
        max_age_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self.open_registration = open_registration
        self.min_refresh_s = min_refresh_s
        self.max_age_s = max_age_s
        self._clock = clock
        self._known: frozenset[str] = frozenset()
        self._read_at: float | None = None

    def _refresh(self) -> None:
        self._known = frozenset(self._read())
        self._read_at = self._clock()

    def counts(self, camera_id: str) -> bool:
        """Whether frames of `camera_id` are counted (raises what `read` raises when Redis is down)."""
        if self.open_registration:
            return True
        age = None if self._read_at is None else self._clock() - self._read_at
        if age is None or age >= self.max_age_s or (camera_id not in self._known and age >= self.min_refresh_s):
            self._refresh()
        return camera_id in self._known
