"""When a camera that failed is tried again: capped exponential backoff with jitter."""

from __future__ import annotations

import random
from collections.abc import Callable


def backoff_s(
    attempt: int, base_s: float = 0.5, cap_s: float = 30.0, rand: Callable[[], float] = random.random
) -> float:
    """Delay before retry number `attempt` (0-based): "equal jitter", uniformly in [c/2, c] where
    c = min(cap, base·2^attempt). Half the ceiling is always waited, so a camera that never answers is
    tried about every 0.75·cap seconds and costs nothing in between; the other half spreads cameras
    that failed together (a switch reboot) so they do not all reconnect at once. The exponent is
    clamped, so any attempt count is safe (2**1100 would not fit a float)."""
    ceiling = min(cap_s, base_s * 2.0 ** min(max(attempt, 0), 32))
    return ceiling / 2 + rand() * ceiling / 2
