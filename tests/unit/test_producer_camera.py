"""One camera with hand-written fakes (a scripted source, a recording publisher): sampling, drops by reason,
reconnects, statuses, sequence numbers; and the supervisor that applies a reloaded site."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from maskwatch.frames import Frame
from maskwatch.procs import wait_for
from maskwatch.site import CameraConfig
from producer.camera import Camera, CameraOptions, CameraState
from producer.metrics import CAPTURED, DROPPED_BACKPRESSURE, DROPPED_BROKER, ENCODE_ERRORS, SENT, CameraCounters
from producer.sources import Captured, Source, SourceError
from producer.supervisor import Supervisor

pytestmark = pytest.mark.timeout(30)

PIXELS = np.full((48, 64, 3), 120, np.uint8)
FAST = CameraOptions(reconnect_base_s=0.01, reconnect_max_s=0.05, offline_after_s=0.3)


class ScriptedSource:
    """Opens fail `fail_opens` times; each connection then gives `frames_per_connection` frames and fails
    (or never fails when None). Records every call."""

    live = False

    def __init__(
        self,
        fail_opens: int = 0,
        frames_per_connection: int | None = None,
        payload: Callable[[], Captured] | None = None,
    ) -> None:
        self.fail_opens = fail_opens
        self.frames_per_connection = frames_per_connection
        self.payload = payload or (lambda: Captured(int(time.time() * 1000), image=PIXELS))
        self.opens = 0
        self.closes = 0
        self.reads = 0
        self._left: int | None = None

    def open(self) -> None:
        self.opens += 1
        if self.opens <= self.fail_opens:
            raise SourceError("connection refused")
        self._left = self.frames_per_connection

    def read(self, t: float) -> Captured | None:
        self.reads += 1
        if self._left is not None:
            if self._left <= 0:
                raise SourceError("stream lost")
            self._left -= 1
        return self.payload()

    def close(self) -> None:
        self.closes += 1

    def interrupt(self) -> None:
        return None


class RecordingPublisher:
    """Takes every frame (counted sent at once), optionally slowly, or refuses them all."""

    def __init__(self, delay_s: float = 0.0, refuse: bool = False) -> None:
        self.frames: list[Frame] = []
        self.delay_s = delay_s
        self.refuse = refuse
        self._lock = threading.Lock()

    def send(self, frame: Frame, counters: CameraCounters) -> bool:
        if self.delay_s:
            threading.Event().wait(self.delay_s)
        if self.refuse:
            counters.add(DROPPED_BROKER)
            return False
        with self._lock:
            self.frames.append(frame)
        counters.add(SENT)
        return True


def _camera(
    cfg: CameraConfig,
    source: Source,
    publisher: RecordingPublisher,
    options: CameraOptions = FAST,
    state: CameraState | None = None,
) -> tuple[Camera, list[str]]:
    statuses: list[str] = []
    cam = Camera(
        cfg,
        "site",
        publisher,  # type: ignore[arg-type]
        state or CameraState(CameraCounters(cfg.id)),
        "prod-1",
        options,
        source,
        on_status=lambda _c, s: statuses.append(s),
    )
    return cam, statuses


@pytest.mark.timeout(20)
def test_a_finite_run_sends_every_frame_in_sequence() -> None:
    pub = RecordingPublisher()
    cam, statuses = _camera(
        CameraConfig(id="a", source="synthetic", fps=50), ScriptedSource(), pub, CameraOptions(max_frames=12)
    )
    cam.start()
    wait_for(lambda: cam.ended, 10, "the camera to end")
    assert [f.seq for f in pub.frames] == list(range(12))
    assert all(f.producer == "prod-1" and (f.width, f.height) == (64, 48) for f in pub.frames)
    assert statuses == ["online", "ended"]
    row = cam.status_fields()
    assert (row["captured"], row["sent"], row["status"], row["resolution"]) == (12, 12, "ended", "64x48")
    assert row["last_capture_ms"] == pub.frames[-1].ts_ms


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest"])
@pytest.mark.timeout(30)
def test_a_slow_encoder_drops_by_policy_and_capture_keeps_its_pace(policy: str) -> None:
    pub = RecordingPublisher(delay_s=0.1)  # 10 frames/s at most, capture asks for 60
    cfg = CameraConfig(id="a", source="synthetic", fps=60, queue_size=2, drop_policy=policy)  # type: ignore[arg-type]
    cam, _ = _camera(cfg, ScriptedSource(), pub, CameraOptions(max_frames=60))
    t0 = time.monotonic()
    cam.start()
    wait_for(lambda: cam.ended, 20, "the camera to end")
    c = cam.counters.snapshot()
    assert c[CAPTURED] == 60 and c[DROPPED_BACKPRESSURE] > 20
    assert c[CAPTURED] == c[SENT] + c[DROPPED_BACKPRESSURE]  # every frame accounted for
    assert [f.seq for f in pub.frames] == list(range(c[SENT]))  # seq counts frames sent, without gaps
    assert time.monotonic() - t0 < 4  # capture was not slowed to the encoder's pace


@pytest.mark.timeout(30)
def test_wait_policy_sends_everything_at_the_encoders_pace() -> None:
    pub = RecordingPublisher(delay_s=0.02)
    cfg = CameraConfig(id="a", source="synthetic", fps=60, queue_size=1, drop_policy="wait")
    cam, _ = _camera(cfg, ScriptedSource(), pub, CameraOptions(max_frames=30))
    cam.start()
    wait_for(lambda: cam.ended, 20, "the camera to end")
    c = cam.counters.snapshot()
    assert (c[CAPTURED], c[SENT], c[DROPPED_BACKPRESSURE]) == (30, 30, 0)


@pytest.mark.timeout(20)
def test_reconnects_after_failures_and_lost_streams() -> None:
    src = ScriptedSource(fail_opens=2, frames_per_connection=5)
    cam, statuses = _camera(CameraConfig(id="a", source="synthetic", fps=60), src, RecordingPublisher())
    cam.start()
    wait_for(lambda: cam.counters.get(SENT) >= 12, 10, "frames across three connections")
    cam.stop()
    assert cam.join(5)
    assert statuses[:4] == ["online", "reconnecting", "online", "reconnecting"]
    assert cam.counters.snapshot()["reconnects"] >= 4 and src.closes >= src.opens - 1
    cam.mark_stopped("producer stopped")
    assert cam.status_fields()["status"] == "offline" and cam.status_fields()["fps"] == 0.0


@pytest.mark.timeout(20)
def test_a_camera_that_never_answers_turns_offline_and_is_tried_rarely() -> None:
    src = ScriptedSource(fail_opens=10**9)
    opts = CameraOptions(reconnect_base_s=0.05, reconnect_max_s=0.4, offline_after_s=0.3)
    cam, statuses = _camera(CameraConfig(id="a", source="synthetic"), src, RecordingPublisher(), opts)
    cam.start()
    wait_for(lambda: cam.status == "offline", 5, "status offline")
    opens = src.opens
    threading.Event().wait(1.0)  # a window to count attempts in
    assert src.opens - opens <= 6  # about one try per 0.2-0.4 s, not a busy loop
    assert cam.status_fields()["last_error"] == "connection refused"
    cam.stop()
    assert cam.join(2)
    assert "online" not in statuses


@pytest.mark.timeout(20)
def test_broker_refusals_and_bad_frames_are_counted_by_reason() -> None:
    frames = iter([Captured(1, jpeg=b"\xff\xd8\xffbroken"), *[Captured(2, image=PIXELS)] * 10])
    src = ScriptedSource(payload=lambda: next(frames))
    pub = RecordingPublisher(refuse=True)
    cam, _ = _camera(CameraConfig(id="a", source="synthetic", fps=60), src, pub, CameraOptions(max_frames=5))
    cam.start()
    wait_for(lambda: cam.ended, 10, "the camera to end")
    c = cam.counters.snapshot()
    assert (c[CAPTURED], c[ENCODE_ERRORS], c[DROPPED_BROKER], c[SENT]) == (5, 1, 4, 0)
    assert cam.state.seq == 0  # nothing was sent, so no sequence number was used


@pytest.mark.timeout(30)
def test_supervisor_applies_a_reloaded_site_and_sequences_continue() -> None:
    pub = RecordingPublisher()
    sup = Supervisor(pub, "prod-1", FAST, source_factory=lambda cfg: ScriptedSource())  # type: ignore[arg-type]
    cams = [CameraConfig(id=c, source="synthetic", fps=50) for c in "abc"]
    ch = sup.apply("site", cams)
    assert sorted(ch.added) == ["a", "b", "c"]
    wait_for(lambda: all(sup.states[c].seq >= 5 for c in "abc"), 10, "three cameras sending")
    a_cam = sup.cameras["a"]

    new = [cams[0], CameraConfig(id="b", source="synthetic", fps=40), CameraConfig(id="d", source="synthetic", fps=50)]
    ch = sup.apply("site", new)
    assert (ch.added, ch.removed, ch.changed, ch.unchanged) == (["d"], ["c"], ["b"], ["a"])
    assert sup.cameras["a"] is a_cam and a_cam.alive  # untouched
    b_seq = sup.states["b"].seq
    wait_for(lambda: sup.states["b"].seq >= b_seq + 5 and sup.states["d"].seq >= 5, 10, "b and d sending")
    rows = sup.status_rows()
    assert rows["c"]["status"] == "offline" and "removed" in str(rows["c"]["last_error"])
    assert "c" not in sup.status_rows()  # a removed camera's last row is written once
    sup.stop_all()
    by_cam: dict[str, list[int]] = {}
    for f in pub.frames:
        by_cam.setdefault(f.camera_id, []).append(f.seq)
    for cid, seqs in by_cam.items():
        assert seqs == list(range(len(seqs))), cid  # b continued its sequence across its restart
    assert all(r["status"] == "offline" for r in sup.status_rows().values())
