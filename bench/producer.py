"""`python -m bench.producer`: what one producer process can push, and what a camera costs.

Starts its own Tansu broker on a free port. Figures are per core of CPU time (the process's
user+system time, all threads), so they hold on a machine shared with other work; the wall-clock
rates are printed too.

1. encode: decode/resize/JPEG of one frame, one thread, no Kafka.
2. push: cameras sampling pre-rendered frames as fast as allowed (60 fps each, enough cameras to
   saturate the machine) through the real camera → hand-off → encoder → Kafka path; frames/s
   acknowledged by the broker, and per core.
3. per camera at 5 fps: 16 cameras of one kind for a while; CPU per camera as a share of one core.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import psutil

from maskwatch.logs import setup_logging
from maskwatch.procs import Children
from maskwatch.site import CameraConfig
from maskwatch.topics import ensure_topics
from producer.camera import CameraOptions
from producer.encoder import encode
from producer.metrics import DROPPED_BROKER, SENT, ProducerMetrics
from producer.publisher import Publisher
from producer.scene import compose
from producer.sources import Captured, Source
from producer.sources.base import now_ms
from producer.sources.synthetic import SyntheticSource
from producer.supervisor import Supervisor

SIZES = ((640, 480), (1280, 720))


class FramesSource:
    """Pre-rendered frames, as pixels (what FFmpeg hands over for RTSP) or as the camera's JPEG (MJPEG)."""

    live = False

    def __init__(self, frames: list[np.ndarray], as_jpeg: bool) -> None:
        self.items = (
            [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes() for f in frames]
            if as_jpeg
            else frames
        )
        self.as_jpeg = as_jpeg
        self.i = 0

    def open(self) -> None:
        return None

    def read(self, t: float) -> Captured:
        item = self.items[self.i % len(self.items)]
        self.i += 1
        if self.as_jpeg:
            assert isinstance(item, bytes)
            return Captured(now_ms(), jpeg=item)
        assert isinstance(item, np.ndarray)
        return Captured(now_ms(), image=item)

    def close(self) -> None:
        return None

    def interrupt(self) -> None:
        return None


def scenes(w: int, h: int, n: int = 4) -> list[np.ndarray]:
    return [compose("mixed", t, w, h) for t in np.linspace(0, 3, n)]


def frames_of(w: int, h: int, as_jpeg: bool) -> Callable[[CameraConfig], Source]:
    frames = scenes(w, h)
    return lambda _cam: FramesSource(frames, as_jpeg)


@dataclass
class Run:
    sent_per_s: float
    cpu_cores: float  # CPU seconds per second
    broker_drops_per_s: float

    @property
    def per_core(self) -> float:
        return self.sent_per_s / self.cpu_cores if self.cpu_cores else 0.0


def cpu_s() -> float:
    t = psutil.Process().cpu_times()
    return float(t.user + t.system)


def bench_encode(w: int, h: int, seconds: float) -> tuple[float, float]:
    """(frames per CPU-second, encoded KiB) for one thread encoding w×h at quality 80."""
    frames = [Captured(0, image=f) for f in scenes(w, h)]
    n, c0, t_end = 0, cpu_s(), time.monotonic() + seconds
    size = 0
    while time.monotonic() < t_end:
        size = len(encode(frames[n % len(frames)], w, 80, 4 << 20).jpeg)
        n += 1
    return n / max(1e-9, cpu_s() - c0), size / 1024


def run_cameras(
    bootstrap: str,
    topic: str,
    cams: list[CameraConfig],
    factory: Callable[[CameraConfig], Source],
    warmup_s: float,
    seconds: float,
) -> Run:
    metrics = ProducerMetrics()
    pub = Publisher([bootstrap], topic, metrics=metrics, max_inflight_bytes=64 << 20)
    pub.start()
    sup = Supervisor(
        pub, uuid.uuid4().hex[:12], CameraOptions(max_frame_bytes=4 << 20), metrics, source_factory=factory
    )
    try:
        sup.apply("bench", cams)
        time.sleep(warmup_s)  # a warm-up period, not a wait for a condition
        sent0, drop0, c0, t0 = total(sup, SENT), total(sup, DROPPED_BROKER), cpu_s(), time.monotonic()
        time.sleep(seconds)  # the measurement window
        sent1, drop1, c1, t1 = total(sup, SENT), total(sup, DROPPED_BROKER), cpu_s(), time.monotonic()
    finally:
        sup.stop_all()
        pub.close()
    return Run((sent1 - sent0) / (t1 - t0), (c1 - c0) / (t1 - t0), (drop1 - drop0) / (t1 - t0))


def total(sup: Supervisor, reason: str) -> int:
    return sum(s.counters.get(reason) for s in sup.states.values())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.producer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=8.0, help="measurement window of each run")
    ap.add_argument("--cameras", type=int, default=16, help="cameras in the per-camera run")
    ap.add_argument("--push-cameras", type=int, default=16, help="cameras (at 60 fps each) in the push run")
    args = ap.parse_args(argv)
    setup_logging("ERROR")  # the tables are the output; drops are counted in them

    with tempfile.TemporaryDirectory() as tmp, Children(Path(tmp)) as children:
        bootstrap = children.start_broker()
        tansu = psutil.Process(children["tansu"].pid)
        print(
            f"producer benchmark: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, OpenCV {cv2.__version__}, Tansu at {bootstrap}"
        )
        print("\n1. encode, one thread (no Kafka)")
        print(f"  {'frame':<10} {'frames per core-s':>18} {'JPEG KiB':>9}")
        for w, h in SIZES:
            rate, kib = bench_encode(w, h, min(args.seconds, 4))
            print(f"  {f'{w}x{h}':<10} {rate:>18.0f} {kib:>9.0f}")

        print(f"\n2. push: {args.push_cameras} cameras at 60 fps each, camera → encoder → Kafka (acks=1)")
        print(
            f"  {'frame':<10} {'source':<14} {'sent/s':>8} {'CPU cores':>10} {'sent per core-s':>16} "
            f"{'broker drops/s':>15} {'broker CPU':>11}"
        )
        for w, h in SIZES:
            for label, as_jpeg in (("pixels", False), ("camera JPEG", True)):
                topic = f"bench-{uuid.uuid4().hex[:8]}"
                ensure_topics([bootstrap], topic, 12, f"{topic}.dlq")
                cams = [
                    CameraConfig(id=f"p{i}", source="synthetic", fps=60, max_width=w) for i in range(args.push_cameras)
                ]
                b0 = tansu.cpu_times()
                run = run_cameras(bootstrap, topic, cams, frames_of(w, h, as_jpeg), 2.0, args.seconds)
                b1 = tansu.cpu_times()
                broker_cores = (b1.user + b1.system - b0.user - b0.system) / (args.seconds + 2.0)
                print(
                    f"  {f'{w}x{h}':<10} {label:<14} {run.sent_per_s:>8.0f} {run.cpu_cores:>10.2f} {run.per_core:>16.0f} "
                    f"{run.broker_drops_per_s:>15.0f} {broker_cores:>11.2f}"
                )

        print(f"\n3. {args.cameras} cameras at 5 fps, 640 px wide: CPU per camera (share of one core)")
        print(f"  {'source':<34} {'sent/s':>8} {'expected':>9} {'CPU cores':>10} {'per camera':>11}")
        kinds: list[tuple[str, Callable[[CameraConfig], Source], int]] = [
            ("synthetic scene (compose + encode)", lambda _c: SyntheticSource("mixed"), 640),
            ("decoded 640x480 (RTSP after FFmpeg)", frames_of(640, 480, False), 640),
            ("decoded 1280x720, resized to 640", frames_of(1280, 720, False), 640),
            ("camera JPEG 640x480 (MJPEG)", frames_of(640, 480, True), 640),
        ]
        for label, factory, max_w in kinds:
            topic = f"bench-{uuid.uuid4().hex[:8]}"
            ensure_topics([bootstrap], topic, 12, f"{topic}.dlq")
            cams = [
                CameraConfig(id=f"c{i:02d}", source="synthetic", fps=5, max_width=max_w) for i in range(args.cameras)
            ]
            run = run_cameras(bootstrap, topic, cams, factory, 2.0, args.seconds)
            per_cam = 100 * run.cpu_cores / args.cameras
            print(
                f"  {label:<34} {run.sent_per_s:>8.1f} {5 * args.cameras:>9} {run.cpu_cores:>10.2f} {per_cam:>10.1f}%"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
