"""`python -m producer --site site.yaml`: run a site's cameras (or the demo cameras) into Kafka; SIGHUP re-reads the site file."""

from __future__ import annotations

import argparse
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
    ap = argparse.ArgumentParser(prog="python -m producer", description=__doc__)
    ap.add_argument("--site", dest="site_file", help="site YAML (default: demo cameras)")
    ap.add_argument("--kafka", help="bootstrap servers (env MW_KAFKA)")
    ap.add_argument("--redis-url", help="Redis URL (env MW_REDIS_URL)")
    ap.add_argument("--topic", help="frames topic (env MW_TOPIC)")
    ap.add_argument("--shard", help="i/n: run the cameras whose id hashes to i mod n")
    ap.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port (0: any free port)")
    ap.add_argument("--max-frames", type=int, help="stop each camera after this many frames")
    ap.add_argument("--demo-cameras", type=int)
    ap.add_argument("--demo-fps", type=float)
    args = ap.parse_args(argv)
    return ProducerSettings(**{k: v for k, v in vars(args).items() if v is not None})


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
