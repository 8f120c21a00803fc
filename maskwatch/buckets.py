"""Contract 1's topic names: which topic carries a frame captured at a given time (one topic, or time buckets).

With `rotate_s` > 0 a frame goes to the topic of its capture time's bucket, `{base}.{bucket start, epoch s}`; the
workers follow every such topic by the pattern, and `maskwatch.rotation`'s janitor creates and deletes them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class TopicScheme:
    """Which topic carries a frame captured at a given time; `rotate_s` = 0 means the one fixed topic `base`."""

    base: str
    rotate_s: int = 0

    def __post_init__(self) -> None:
        if self.rotate_s < 0:
            raise ValueError(f"rotate_s must be >= 0, got {self.rotate_s}")

    @property
    def rotating(self) -> bool:
        return self.rotate_s > 0

    @property
    def pattern(self) -> str:
        """The regular expression every bucket topic of this scheme matches (and the dead-letter topic does not)."""
        return rf"^{re.escape(self.base)}\.\d+$"

    def bucket(self, ts_ms: int) -> int:
        """The start (epoch seconds) of the bucket holding `ts_ms`."""
        return ts_ms // (self.rotate_s * 1000) * self.rotate_s

    def topic_for(self, ts_ms: int) -> str:
        return f"{self.base}.{self.bucket(ts_ms)}" if self.rotating else self.base

    def bucket_of(self, topic: str) -> int | None:
        """A bucket topic's start (epoch seconds), None for any other topic."""
        if not self.rotating or not re.match(self.pattern, topic):
            return None
        return int(topic.rsplit(".", 1)[1])

    def is_mine(self, topic: str) -> bool:
        return self.bucket_of(topic) is not None if self.rotating else topic == self.base
