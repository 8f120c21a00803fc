"""The worker's batch logic without Kafka, Redis or gRPC: what each polled record becomes, what detections count,
which episode states and latest frames a batch stores, and what the live notice says."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import cv2
import numpy as np
import pytest

from maskwatch.detections import INCORRECT, WITH_MASK, WITHOUT_MASK, Counts, Detection, Detections
from maskwatch.frames import H_CAMERA, H_ERROR, H_HEIGHT, H_SEQ, H_TRUNCATED, H_VERSION, H_WIDTH, Frame, header_map
from maskwatch.intake import FrameLimits, Intake, Rejection, intake
from maskwatch.store import EPISODE_CLOSED, EPISODE_OPEN, TP, BatchWrite, Episode, Seen
from worker.batch import Books, RejectionLog, batch_notice, count, live_notice, refuse
from worker.episodes import Announcer
from worker.settings import WorkerSettings

pytestmark = pytest.mark.timeout(60)

NOW = 1_700_000_000_000
P0: TP = ("frames", 0)
P1: TP = ("frames", 1)
SITE = frozenset({"gate", "hall"})
LIMITS = FrameLimits(max_bytes=64 * 1024, max_pixels=1280 * 720, max_age_ms=2000)


def jpeg(width: int = 64, height: int = 48, texture: int | None = None) -> bytes:
    """A black image, or with `texture` a seeded noise (sharp enough for a face crop to be kept as evidence)."""
    img = np.zeros((height, width, 3), np.uint8)
    if texture is not None:
        img = np.random.default_rng(texture).integers(0, 256, img.shape, dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes()


def claiming(width: int, height: int) -> bytes:
    """A small JPEG whose start-of-frame header announces width x height (a header bomb)."""
    raw = jpeg()
    i = raw.index(b"\xff\xc0")
    return raw[: i + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + raw[i + 9 :]


def frame(
    camera: str = "gate", seq: int = 1, age_ms: int = 100, width: int = 64, height: int = 48, texture: int | None = None
) -> Frame:
    return Frame(camera, jpeg(width, height, texture), seq, NOW - age_ms, width, height, "run-1")


@dataclass(frozen=True)
class Rec:
    """A consumed record as kafka-python hands it over."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    offset: int = 0
    timestamp: int | None = NOW


def rec(f: Frame, offset: int = 0, key: bytes | None = None, value: bytes | None = None, **headers: bytes | None) -> Rec:
    """`f` as a record; `headers` replace (bytes) or drop (None) the frame's headers, by name with _ for -."""
    h = dict(f.headers())
    for name, v in headers.items():
        name = name.replace("_", "-")
        if v is None:
            h.pop(name, None)
        else:
            h[name] = v
    return Rec(f.key if key is None else key, f.jpeg if value is None else value, list(h.items()), offset)


def mw(name: str) -> str:
    """A header's name as a keyword of `rec`."""
    return name.replace("-", "_")


def sort(polled: dict[TP, list[Rec]], seen: dict[TP, Seen] | None = None, limits: FrameLimits = LIMITS) -> Intake:
    """`intake` for the site's cameras, with nothing read before unless `seen` says so."""
    return intake(polled, {tp: Seen() for tp in polled} | (seen or {}), NOW, limits, SITE.__contains__)


# ---- records → frames and dead letters ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("record", "asked", "dead", "counted"),
    [
        pytest.param(rec(frame()), ["gate"], [], {}, id="a fresh frame is asked about"),
        pytest.param(rec(frame(age_ms=5000)), [], [], {"gate": Counts(dropped_stale=1)}, id="an old frame is counted stale"),
        pytest.param(rec(frame(), **{mw(H_VERSION): None}), [], ["no_version"], {"gate": Counts(invalid=1)}, id="no version header"),
        pytest.param(rec(frame(), **{mw(H_VERSION): b"9"}), [], ["unknown_version"], {"gate": Counts(invalid=1)}, id="unknown version"),
        pytest.param(rec(frame(), key=b"no spaces allowed"), [], ["bad_camera_id"], {}, id="a bad key is counted nowhere"),
        pytest.param(
            rec(frame(), **{mw(H_CAMERA): b"hall"}), [], ["camera_mismatch"], {"gate": Counts(invalid=1)}, id="key and header disagree"
        ),
        pytest.param(rec(frame(), value=b"GIF89a"), [], ["not_jpeg"], {"gate": Counts(invalid=1)}, id="not a JPEG"),
        pytest.param(rec(frame(), value=b""), [], ["not_jpeg"], {"gate": Counts(invalid=1)}, id="empty value"),
        pytest.param(
            rec(frame(), value=jpeg()[:-2] + bytes(70 * 1024) + b"\xff\xd9"), [], ["too_large"], {"gate": Counts(invalid=1)}, id="over the byte cap"
        ),
        pytest.param(
            rec(frame(), value=claiming(4000, 3000), **{mw(H_WIDTH): b"4000", mw(H_HEIGHT): b"3000"}),
            [],
            ["too_large"],
            {"gate": Counts(invalid=1)},
            id="a header announcing more pixels than the cap",
        ),
        pytest.param(
            rec(frame(), **{mw(H_WIDTH): b"640"}), [], ["bad_size"], {"gate": Counts(invalid=1)}, id="size headers that lie"
        ),
        pytest.param(rec(frame(), **{mw(H_SEQ): None}), [], ["bad_header"], {"gate": Counts(invalid=1)}, id="no sequence number"),
        pytest.param(rec(frame(), value=b"\xff\xd8\xff\xd9"), [], ["undecodable"], {"gate": Counts(invalid=1)}, id="a JPEG with no image"),
        pytest.param(rec(frame("lab")), [], ["unknown_camera"], {}, id="a camera the site does not list"),
        pytest.param(rec(frame("lab"), **{mw(H_VERSION): None}), [], ["no_version"], {}, id="a bad frame of an unknown camera"),
    ],
)
def test_what_each_record_becomes(record: Rec, asked: list[str], dead: list[str], counted: dict[str, Counts]) -> None:
    got = sort({P0: [record]})
    assert [f.camera_id for _, f in got.frames] == asked
    assert [d.reason for d in got.dead] == dead
    assert [header_map(d.headers)[H_ERROR] for d in got.dead] == dead
    assert got.batch.totals_by_camera() == counted
    assert got.records == 1
    assert (got.batch.start_offsets, got.batch.next_offsets) == ({P0: 0}, {P0: 1})


def test_a_dead_letter_keeps_the_message_and_cuts_a_huge_value() -> None:
    huge = jpeg() + bytes(600 * 1024)
    got = sort({P0: [rec(frame(), value=huge), rec(frame("lab"), offset=1)]})
    too_big, unknown = got.dead
    assert (too_big.key, too_big.reason, header_map(too_big.headers)[H_TRUNCATED]) == (b"gate", "too_large", str(len(huge)))
    assert too_big.value == huge[: len(too_big.value or b"")] and len(too_big.value or b"") < len(huge)
    assert (unknown.key, unknown.value, unknown.reason) == (b"lab", frame("lab").jpeg, "unknown_camera")
    assert header_map(unknown.headers)[H_SEQ] == "1"


@pytest.mark.parametrize(
    ("seqs", "invalid_at", "gaps"),
    [
        pytest.param([1, 2, 3], set(), 0, id="consecutive frames lose nothing"),
        pytest.param([1, 2, 5], set(), 2, id="a gap inside the batch"),
        pytest.param([1, 2, 3], {1}, 0, id="an invalid frame still closes the gap"),
        pytest.param([1, 4], {0}, 2, id="a gap after an invalid frame"),
    ],
)
def test_sequence_gaps_in_a_batch(seqs: list[int], invalid_at: set[int], gaps: int) -> None:
    recs = [rec(frame(seq=s), offset=10 + i, **({mw(H_VERSION): b"9"} if i in invalid_at else {})) for i, s in enumerate(seqs)]
    got = sort({P0: recs})
    span = got.batch.seqs[(P0, "gate")]
    assert (span.first, span.last, span.gaps) == (seqs[0], seqs[-1], gaps)
    assert (got.batch.start_offsets, got.batch.next_offsets) == ({P0: 10}, {P0: 10 + len(seqs)})


def test_offsets_span_each_partition_and_empty_partitions_are_skipped() -> None:
    polled = {P0: [rec(frame(seq=1), offset=4), rec(frame(seq=2, age_ms=9000), offset=5)], P1: [rec(frame("hall"), offset=7)], ("frames", 2): []}
    got = sort(polled)
    assert got.batch.start_offsets == {P0: 4, P1: 7}
    assert got.batch.next_offsets == {P0: 6, P1: 8}
    assert [(tp, f.camera_id) for tp, f in got.frames] == [(P0, "gate"), (P1, "hall")]
    assert got.records == 3


@pytest.mark.parametrize(
    ("batch", "before", "asked", "copies", "learnt"),
    [
        pytest.param([("run-1", 1), ("run-1", 2)], None, [1, 2], [], ("run-1", 3), id="frames in order are all new"),
        pytest.param([("run-1", 1), ("run-1", 1), ("run-1", 2)], None, [1, 2], [1], ("run-1", 3), id="a retry's copy right behind"),
        pytest.param([("run-1", 1), ("run-1", 2), ("run-1", 1)], None, [1, 2], [2], ("run-1", 3), id="a copy after a later frame"),
        pytest.param([("run-1", 4), ("run-1", 5)], ("run-1", 5), [5], [0], ("run-1", 6), id="a copy of a frame stored before"),
        pytest.param([("run-2", 1)], ("run-1", 9), [1], [], ("run-2", 2), id="a restarted producer starts anew"),
    ],
)
def test_copies_a_producer_retry_wrote_are_skipped(
    batch: list[tuple[str, int]], before: tuple[str, int] | None, asked: list[int], copies: list[int], learnt: tuple[str, int]
) -> None:
    recs = [rec(frame(seq=seq), offset=i, mw_producer=run.encode()) for i, (run, seq) in enumerate(batch)]
    seen = Seen({} if before is None else {"gate": before})
    got = sort({P0: recs}, {P0: seen})
    assert [f.seq for _, f in got.frames] == asked
    assert [c.offset for c in got.copies] == copies
    assert got.batch.totals_by_camera() == {}  # a copy is counted nowhere, not even lost
    assert got.batch.seen == {P0: {"gate": learnt}}  # stored with the offsets
    assert (got.records, got.batch.next_offsets) == (len(batch), {P0: len(batch)})


def test_an_unknown_camera_is_logged_once_then_quietly(caplog: pytest.LogCaptureFixture) -> None:
    log = RejectionLog()
    with caplog.at_level(logging.DEBUG, logger="worker.batch"):
        log.log(Intake(BatchWrite(), rejected=[Rejection("lab", P0, n, "unknown_camera", "unknown_camera") for n in range(3)]))
        log.log(Intake(BatchWrite(), rejected=[Rejection("gate", P0, n, "not_jpeg", "not_jpeg") for n in (9, 10)]))
    levels = [(r.levelno, r.getMessage().split(" offset=")[1]) for r in caplog.records]
    assert levels == [
        (logging.WARNING, "0 reason=unknown_camera"),
        (logging.DEBUG, "1 reason=unknown_camera"),
        (logging.DEBUG, "2 reason=unknown_camera"),
        (logging.WARNING, "9 reason=not_jpeg"),
        (logging.WARNING, "10 reason=not_jpeg"),
    ]


def test_a_frame_the_model_refuses_is_counted_invalid_and_dead_lettered_whole() -> None:
    batch = BatchWrite()
    f = frame(seq=42)
    letter = refuse(batch, P0, f, "undecodable")
    assert batch.totals_by_camera() == {"gate": Counts(invalid=1)}
    assert (letter.key, letter.value, letter.reason) == (b"gate", f.jpeg, "undecodable")
    assert header_map(letter.headers) == {**header_map(f.headers()), H_ERROR: "undecodable"}


# ---- detections → counts, episodes, latest frame ---------------------------------------------------------------
FACE_A = (0.10, 0.10, 0.40, 0.40)
FACE_B = (0.50, 0.55, 0.90, 0.95)


def dets(*faces: tuple[tuple[float, float, float, float], str, float]) -> Detections:
    return Detections(tuple(Detection(box, score, label) for box, label, score in faces))


def books(min_frames: int = 3, grace_s: float = 5.0) -> Books:
    return Books.of(WorkerSettings(episode_min_frames=min_frames, episode_grace_s=grace_s))


@pytest.mark.parametrize(
    ("answers", "counted"),
    [
        pytest.param(
            [dets((FACE_A, WITH_MASK, 0.9), (FACE_B, WITHOUT_MASK, 0.8))],
            Counts(frames=1, faces=2, with_mask=1, without_mask=1, faces_16_32=2),
            id="one masked face and one unmasked",
        ),
        pytest.param(
            [dets((FACE_A, WITH_MASK, 0.9), (FACE_B, INCORRECT, 0.3))],
            Counts(frames=1, faces=1, with_mask=1, faces_16_32=1),
            id="a face under the score threshold is not counted",
        ),
        pytest.param([Detections.empty()], Counts(frames=1), id="a frame with nobody"),
        pytest.param([None], None, id="a frame the model refused adds nothing"),
        pytest.param(
            [dets((FACE_A, WITH_MASK, 0.9))] * 3,
            Counts(frames=3, faces=3, with_mask=3, faces_16_32=3, persons=1, persons_with_mask=1),
            id="one person in three frames is one person",
        ),
        pytest.param(
            [dets((FACE_A, WITHOUT_MASK, 0.9))] * 2 + [dets((FACE_A, WITH_MASK, 0.9))],
            Counts(frames=3, faces=3, with_mask=1, without_mask=2, faces_16_32=3, persons=1, persons_without_mask=1),
            id="a person's class is the vote over their frames",
        ),
    ],
)
def test_what_detections_count(answers: list[Detections | None], counted: Counts | None) -> None:
    frames = [(P0, frame(seq=i, age_ms=1000 - 100 * i)) for i in range(len(answers))]
    batch = BatchWrite()
    count(batch, frames, answers, books(), min_score=0.5, blur_faces=True)
    assert batch.totals_by_camera() == ({} if counted is None else {"gate": counted})


@pytest.mark.parametrize(
    ("labels", "min_frames", "episode"),
    [
        pytest.param([WITHOUT_MASK] * 3, 3, (WITHOUT_MASK, 3), id="three unmasked frames open an episode"),
        pytest.param([WITHOUT_MASK] * 2, 3, None, id="two frames are too few to judge"),
        pytest.param([INCORRECT] * 4, 3, (INCORRECT, 4), id="a mask worn wrong is its own class"),
        pytest.param([WITH_MASK] * 5, 3, None, id="a masked person is no violation"),
        pytest.param([WITHOUT_MASK, WITH_MASK, WITH_MASK, WITH_MASK], 3, None, id="most frames masked: no violation"),
    ],
)
def test_which_faces_open_an_episode(labels: list[str], min_frames: int, episode: tuple[str, int] | None) -> None:
    frames = [(P0, frame(seq=i, age_ms=1000 - 100 * i, width=320, height=240, texture=i)) for i in range(len(labels))]
    batch = BatchWrite()
    count(batch, frames, [dets((FACE_A, label, 0.9)) for label in labels], books(min_frames), min_score=0.5, blur_faces=True)
    if episode is None:
        assert batch.episodes == []
        return
    ((part, ep),) = batch.episodes
    assert (part, ep.camera_id, ep.state, ep.label, ep.frames) == (P0, "gate", EPISODE_OPEN, *episode)
    assert ep.first_ms == frames[0][1].ts_ms and ep.last_ms == frames[-1][1].ts_ms
    assert ep.snapshot is not None and cv2.imdecode(np.frombuffer(ep.snapshot, np.uint8), cv2.IMREAD_COLOR) is not None


@pytest.mark.parametrize(
    ("ages_ms", "shown"),
    [
        pytest.param([900, 500, 100], 2, id="the newest frame is shown"),
        pytest.param([100, 900, 500], 0, id="a late frame does not replace a newer one"),
        pytest.param([300, 300], 1, id="of two captured at once, the later in the batch"),
    ],
)
def test_the_latest_frame_each_camera_shows(ages_ms: list[int], shown: int) -> None:
    # frames told apart by their width; the one shown has its boxes drawn
    frames = [(P0, frame(seq=i, age_ms=age, width=80 + 16 * i, height=60)) for i, age in enumerate(ages_ms)]
    batch = BatchWrite()
    count(batch, frames, [dets((FACE_A, WITHOUT_MASK, 0.9))] * len(frames), books(), min_score=0.5, blur_faces=True)
    img = cv2.imdecode(np.frombuffer(batch.latest_jpeg["gate"], np.uint8), cv2.IMREAD_COLOR)
    assert img.shape[:2] == (60, 80 + 16 * shown)
    assert img.max() > 100  # a box drawn on a black frame


def test_each_camera_keeps_its_own_latest_frame_and_tracks() -> None:
    frames = [(P0, frame("gate", seq=1, width=96)), (P1, frame("hall", seq=1, width=112))]
    batch = BatchWrite()
    b = books()
    count(batch, frames, [dets((FACE_A, WITH_MASK, 0.9)), dets((FACE_B, WITH_MASK, 0.9))], b, min_score=0.5, blur_faces=True)
    shapes = {cid: cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR).shape[1] for cid, j in batch.latest_jpeg.items()}
    assert shapes == {"gate": 96, "hall": 112}
    assert b.partition_of == {"gate": P0, "hall": P1}
    assert set(b.trackers.by_camera) == {"gate", "hall"}


def test_cameras_new_to_the_worker_resume_their_stored_episodes_and_revoked_ones_are_forgotten() -> None:
    b = books()
    frames = [(P0, frame("gate", seq=1)), (P0, frame("gate", seq=2)), (P1, frame("hall", seq=1)), (P1, frame("hall", seq=2))]
    answers: list[Detections | None] = [Detections.empty(), Detections.empty(), None, None]
    loads: list[str] = []

    def load(cid: str) -> list[Episode]:
        loads.append(cid)
        return [episode()]

    b.resume(frames, answers, load)
    assert loads == ["gate"]  # once per camera; hall's frames were all refused: nothing to resume for
    assert [ep.id for ep in b.episodes.book("gate").adoptable] == ["e1"]
    count(BatchWrite(), frames, answers, b, min_score=0.5, blur_faces=True)
    b.resume(frames, answers, load)
    assert loads == ["gate"]
    b.load_seen([P0, P1], lambda tp: Seen({"gate": ("run-1", 3)}))
    b.forget({P1})
    assert (set(b.episodes.by_camera), set(b.seen)) == ({"gate"}, {P0})
    b.forget({P0})
    assert (b.episodes.by_camera, b.trackers.by_camera, b.partition_of, b.seen) == ({}, {}, {}, {})


# ---- the live notice -------------------------------------------------------------------------------------------
def episode(state: str = EPISODE_OPEN, last_ms: int = NOW, snapshot: bytes | None = None) -> Episode:
    return Episode(
        camera_id="gate", id="e1", label=WITHOUT_MASK, votes=((WITHOUT_MASK, 3),), first_ms=NOW - 1000, last_ms=last_ms,
        box=FACE_A, score=0.9, state=state, grace_ms=5000, snapshot=snapshot, snapshot_ms=NOW if snapshot else None,
    )  # fmt: skip


def counted_batch() -> BatchWrite:
    batch = BatchWrite()
    batch.add(P0, "gate", NOW - 500, Counts(frames=2, faces=1, with_mask=1))
    batch.add(P0, "gate", NOW - 70_000, Counts(frames=1))  # the minute before
    batch.add(P0, "gate", NOW - 100, Counts(invalid=1))
    batch.add(P1, "hall", NOW - 300, Counts(frames=4))
    batch.episodes.append((P0, episode()))
    return batch


@pytest.mark.parametrize(
    ("applied", "cameras", "violations"),
    [
        pytest.param(
            {P0, P1},
            {"gate": {"frames": 3, "last_frame_ms": NOW - 500}, "hall": {"frames": 4, "last_frame_ms": NOW - 300}},
            ["e1"],
            id="a stored batch announces its cameras and episodes",
        ),
        pytest.param({P1}, {"hall": {"frames": 4, "last_frame_ms": NOW - 300}}, [], id="only what the transaction applied"),
        pytest.param(set(), {}, [], id="a duplicate batch announces nothing"),
    ],
)
def test_the_live_notice_of_a_batch(applied: set[TP], cameras: dict[str, dict[str, int]], violations: list[str]) -> None:
    notice = batch_notice("worker-1", NOW, counted_batch(), applied, Announcer()).to_json()
    assert notice["type"] == "batch" and notice["worker"] == "worker-1" and notice["ts_ms"] == NOW
    assert notice["cameras"] == cameras
    assert [v["id"] for v in notice["violations"]] == violations


@pytest.mark.parametrize(
    ("states", "announced"),
    [
        pytest.param([episode(last_ms=NOW), episode(last_ms=NOW + 1000)], [NOW], id="an open episode is announced when it opens"),
        pytest.param([episode(last_ms=NOW), episode(last_ms=NOW + 6000)], [NOW, NOW + 6000], id="and again every few seconds"),
        pytest.param(
            [episode(last_ms=NOW), episode(last_ms=NOW + 1000, snapshot=b"jpeg")], [NOW, NOW + 1000], id="and when its snapshot improves"
        ),
        pytest.param([episode(last_ms=NOW), episode(EPISODE_CLOSED, last_ms=NOW + 1000)], [NOW, NOW + 1000], id="and when it closes"),
    ],
)
def test_which_episode_states_are_announced(states: list[Episode], announced: list[int]) -> None:
    announcer = Announcer()
    sent = [live_notice("worker-1", NOW, {}, announcer.select([ep])).violations for ep in states]
    assert [v["last_ms"] for notice in sent for v in notice] == announced
    assert all("snapshot" not in v for notice in sent for v in notice)  # the page asks for the image by URL
