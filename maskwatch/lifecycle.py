"""Process lifecycle: one stop Event set by SIGTERM and SIGINT."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

logger = logging.getLogger(__name__)


def stop_event() -> threading.Event:
    """An Event set by SIGINT or SIGTERM (call from the main thread)."""
    stop = threading.Event()

    def handler(signum: int, _frame: FrameType | None) -> None:
        logger.info("stop requested signal=%s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop
