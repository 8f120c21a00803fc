"""`python -m producer --site site.yaml`: run a site's cameras (or the demo cameras) into Kafka; SIGHUP re-reads the site file."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from types import FrameType

import cv2
from pydantic import ValidationError

from maskwatch.lifecycle import stop_event
from maskwatch.logs import setup_logging
from maskwatch.settings import settings_from_argv
from maskwatch.site import SiteError
from producer.app import run
from producer.settings import ProducerSettings

logger = logging.getLogger(__name__)


def reload_event() -> threading.Event:
    """An Event set by SIGHUP (call from the main thread)."""
    requested = threading.Event()

    def handler(_signum: int, _frame: FrameType | None) -> None:
        requested.set()

    signal.signal(signal.SIGHUP, handler)
    return requested


def parse_settings(argv: list[str] | None = None) -> ProducerSettings:
    """Flags over MW_* environment variables, as the process runs with them; raises ValidationError."""
    flags = ("kafka", "redis_url", "topic", "shard", "metrics_port", "max_frames", "demo_cameras", "demo_fps")
    return settings_from_argv(ProducerSettings, argv, "python -m producer", __doc__, *flags, site_file="--site")


def main(argv: list[str] | None = None) -> int:
    try:
        settings = parse_settings(argv)
    except ValidationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format, "producer")
    # kafka-python warns once per expired batch; the publisher reports drops itself, once per burst
    logging.getLogger("kafka.producer").setLevel(logging.ERROR)
    # RTSP over TCP: UDP is lost behind most firewalls and NATs. FFmpeg and OpenCV write their own
    # unstructured lines to stderr on every failed reconnect; the camera logs the failure itself.
    # An operator's own settings of these variables win.
    os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    if "OPENCV_LOG_LEVEL" not in os.environ:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    stop = stop_event()
    reload_requested = reload_event()
    try:
        return run(settings, stop, reload_requested)
    except SiteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
