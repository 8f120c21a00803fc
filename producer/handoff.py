"""The bounded hand-off between a camera's capture and its encoder, with the camera's named drop policy."""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

from maskwatch.site import DropPolicy

T = TypeVar("T")


class Handoff(Generic[T]):
    """At most `size` items. When full, `put` applies the policy:

    - drop_oldest: the oldest waiting item is dropped and the new one kept (the freshest frames win);
    - drop_newest: the new item is dropped;
    - wait: `put` waits for room (until `close()`), so capture is paced to the encoder; nothing is dropped.

    `put` returns how many items were dropped so the caller can count them.
    """

    def __init__(self, size: int, policy: DropPolicy) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self.policy = policy
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, item: T) -> int:
        with self._cond:
            if self._closed:
                return 1
            if len(self._items) < self.size:
                self._items.append(item)
                self._cond.notify_all()
                return 0
            if self.policy == "drop_newest":
                return 1
            if self.policy == "drop_oldest":
                self._items.popleft()
                self._items.append(item)
                self._cond.notify_all()
                return 1
            while len(self._items) >= self.size and not self._closed:
                self._cond.wait(0.5)
            if self._closed:
                return 1
            self._items.append(item)
            self._cond.notify_all()
            return 0

    def get(self, timeout_s: float) -> T | None:
        """The oldest item, or None when none arrives within `timeout_s` (or the hand-off is closed and empty)."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout_s)
            if not self._items:
                return None
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def close(self) -> None:
        """No more puts; waiting putters return; getters drain what is left."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def clear(self) -> int:
        with self._cond:
            n = len(self._items)
            self._items.clear()
            self._cond.notify_all()
            return n

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._items)
