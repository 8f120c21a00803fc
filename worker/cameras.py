"""Which cameras the worker counts (the site's, registered in Redis by the producer; any id in open registration)
and the zone each is in."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

# how often the worker re-reads each camera's zone (the producer registers it from the site file)
ZONES_REFRESH_S = 30.0


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


class CameraZones:
    """Each camera's zone: read once for a camera not seen yet, and every camera's re-read every `refresh_s`
    (a camera moved in the site file follows)."""

    def __init__(
        self,
        read: Callable[[list[str]], dict[str, str]],
        refresh_s: float = ZONES_REFRESH_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self.refresh_s = refresh_s
        self._clock = clock
        self._zones: dict[str, str] = {}
        self._read_at = 0.0

    def of(self, cids: set[str]) -> dict[str, str]:
        """The zone of each of `cids` (empty: none); raises what `read` raises when Redis is down."""
        now = self._clock()
        missing = [c for c in cids if c not in self._zones]
        if now - self._read_at >= self.refresh_s:
            missing, self._read_at = sorted(cids | set(self._zones)), now
        if missing:
            self._zones.update(self._read(missing))
        return {c: self._zones.get(c, "") for c in cids}
