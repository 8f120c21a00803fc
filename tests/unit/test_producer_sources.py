"""Sources on local files and a scripted live device: folders, video files, the synthetic scene, the grabber."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from maskwatch.procs import wait_for
from maskwatch.site import CameraConfig
from producer.sources import Captured, SourceEnded, SourceError, make_source
from producer.sources.folder import FolderSource
from producer.sources.live import LiveSource, Stop
from producer.sources.synthetic import SyntheticSource
from producer.sources.video_file import VideoFileSource

pytestmark = pytest.mark.timeout(30)


def _grey(v: int) -> np.ndarray:
    return np.full((48, 64, 3), v, np.uint8)


def _level(cap: Captured) -> int:
    if cap.image is not None:
        return int(cap.image[0, 0, 0])
    img = cv2.imdecode(np.frombuffer(cap.jpeg or b"", np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    return int(np.asarray(img)[0, 0, 0])


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "frames"
    d.mkdir()
    cv2.imwrite(str(d / "b.png"), _grey(20))
    cv2.imwrite(str(d / "a.jpg"), _grey(10))
    (d / "c.jpg").write_bytes(b"")  # a JPEG that is handed on, and fails at the encoder
    (d / "d.png").write_bytes(b"not an image")  # skipped here
    (d / "notes.txt").write_text("ignored")
    cv2.imwrite(str(d / "e.bmp"), _grey(30))
    return d


@pytest.fixture
def video(tmp_path: Path) -> Path:
    path = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10, (64, 48))
    for i in range(30):  # 3 s at 10 fps; frame i has level 8·i
        w.write(_grey(8 * i))
    w.release()
    return path


def test_folder_in_name_order_once(folder: Path) -> None:
    src = FolderSource(str(folder), loop=False)
    src.open()
    got = [src.read(0) for _ in range(4)]
    assert got[0].jpeg is not None and _level(got[0]) in (9, 10, 11)  # a.jpg, undecoded
    assert _level(got[1]) == 20 and got[2].jpeg == b"" and _level(got[3]) == 30
    with pytest.raises(SourceEnded):
        src.read(0)


def test_folder_loops(folder: Path) -> None:
    src = FolderSource(str(folder), loop=True)
    src.open()
    firsts = [src.read(0) for _ in range(5)]
    assert firsts[4].jpeg == firsts[0].jpeg


@pytest.mark.parametrize("make", [lambda p: p / "missing", lambda p: p / "empty"])
def test_folder_missing_or_empty_is_a_source_error(tmp_path: Path, make: object) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError):
        FolderSource(str(make(tmp_path)), loop=True).open()  # type: ignore[operator]


def test_video_file_plays_in_real_time(video: Path) -> None:
    src = VideoFileSource(str(video), loop=False)
    src.open()
    assert src.file_fps == 10
    assert _level(src.read(0.0)) == 0
    assert abs(_level(src.read(1.0)) - 80) <= 4  # 1 s in: frame 10, the frames between were skipped
    assert abs(_level(src.read(1.05)) - 88) <= 4  # asked again before the next frame is due: the next one
    assert abs(_level(src.read(2.5)) - 200) <= 4
    with pytest.raises(SourceEnded):
        src.read(3.5)
    src.close()


def test_video_file_loops(video: Path) -> None:
    src = VideoFileSource(str(video), loop=True)
    src.open()
    src.read(2.95)
    assert _level(src.read(3.2)) <= 4  # past the end: back to the start
    assert abs(_level(src.read(4.2)) - 80) <= 4  # and the clock restarted with it
    src.close()


def test_video_file_missing(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        VideoFileSource(str(tmp_path / "nope.mp4"), loop=True).open()
    (tmp_path / "junk.mp4").write_bytes(b"junk")
    with pytest.raises(SourceError, match="cannot decode"):
        VideoFileSource(str(tmp_path / "junk.mp4"), loop=True).open()


def test_synthetic_size() -> None:
    src = SyntheticSource("bare", 320, 240)
    src.open()
    img = src.read(1.0).image
    assert img is not None and img.shape == (240, 320, 3)


@pytest.mark.parametrize(
    ("source", "cls"),
    [
        ("synthetic:masked@160x120", "SyntheticSource"),
        ("rtsp://cam/1", "StreamSource"),
        ("http://cam/video", "HttpSource"),
        ("mjpeg+http://cam/video", "HttpSource"),
        ("webcam:0", "WebcamSource"),
        ("clip.mp4", "VideoFileSource"),
    ],
)
def test_make_source(source: str, cls: str) -> None:
    src = make_source(CameraConfig(id="c", source=source))
    assert type(src).__name__ == cls


class FakeDevice(LiveSource):
    """A device scripted from the test: frames are pushed in, connect can hang or fail."""

    def __init__(self, open_timeout_s: float = 1.0, read_timeout_s: float = 0.5) -> None:
        super().__init__("fake", open_timeout_s, read_timeout_s)
        self.frames: list[Captured | Exception] = []
        self.cond = threading.Condition()
        self.connect_error: Exception | None = None
        self.connect_hang = threading.Event()
        self.released = threading.Event()

    def push(self, item: Captured | Exception) -> None:
        with self.cond:
            self.frames.append(item)
            self.cond.notify_all()

    def _connect(self) -> None:
        if self.connect_hang.is_set():
            self._closing.wait()
            raise Stop()
        if self.connect_error is not None:
            raise self.connect_error

    def _grab(self) -> Captured | None:
        with self.cond:
            while not self.frames:
                if self.closing:
                    raise Stop()
                self.cond.wait(0.05)
            item = self.frames.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    def _release(self) -> None:
        self.released.set()


@pytest.mark.timeout(10)
def test_live_source_keeps_only_the_freshest_frame() -> None:
    dev = FakeDevice()
    dev.push(Captured(1, image=_grey(1)))
    dev.open()
    for v in (2, 3, 4):
        dev.push(Captured(v, image=_grey(v)))
    wait_for(lambda: dev.frames_grabbed == 4, 5, "the grabber to take every frame")
    got = dev.read(0)
    assert got is not None and got.ts_ms == 4  # 2 and 3 were never sampled
    assert dev.read(0) is None  # nothing new
    dev.close()
    wait_for(dev.released.is_set, 5, "the device released on the grabber thread")


@pytest.mark.timeout(10)
def test_live_source_stalled_or_failed_raises() -> None:
    dev = FakeDevice(read_timeout_s=0.3)
    dev.push(Captured(1, image=_grey(1)))
    dev.open()
    assert dev.read(0) is not None
    wait_for(lambda: _raises(dev), 3, "a stall to be noticed")
    dev.close()
    dev2 = FakeDevice()
    dev2.push(Captured(1, image=_grey(1)))
    dev2.open()
    dev2.read(0)
    dev2.push(SourceError("device unplugged"))
    wait_for(lambda: _raises(dev2, "unplugged"), 3, "the failure to surface")
    dev2.close()


def _raises(dev: LiveSource, match: str = "") -> bool:
    try:
        dev.read(0)
    except SourceError as e:
        return match in str(e)
    return False


@pytest.mark.timeout(10)
def test_live_open_fails_fast_when_the_device_fails_or_hangs() -> None:
    dev = FakeDevice()
    dev.connect_error = OSError("connection refused")
    with pytest.raises(SourceError, match="refused"):
        dev.open()
    hung = FakeDevice(open_timeout_s=0.3, read_timeout_s=0.3)
    hung.connect_hang.set()
    t0 = time.monotonic()
    with pytest.raises(SourceError, match="no frame within"):
        hung.open()
    assert time.monotonic() - t0 < 2
    wait_for(hung.released.is_set, 5, "the hung connection released once it gave up")


@pytest.mark.timeout(10)
def test_interrupt_ends_a_pending_open_at_once() -> None:
    hung = FakeDevice(open_timeout_s=5, read_timeout_s=5)
    hung.connect_hang.set()
    threading.Timer(0.2, hung.interrupt).start()
    t0 = time.monotonic()
    with pytest.raises(SourceError, match="interrupted"):
        hung.open()
    assert time.monotonic() - t0 < 2
