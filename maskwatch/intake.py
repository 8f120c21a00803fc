"""Contract 1 on the consuming side, as every reader of frame topics judges a record: a copy of a frame already
read is skipped, a message breaking the contract is dead-lettered with its reason (and counted `invalid` when its
camera is counted), a valid frame of a camera the site does not list is dead-lettered `unknown_camera`, a frame
older than the age limit is counted `dropped_stale`, and the rest go to the model. The worker sorts each poll with
it; the janitor sorts what nobody read of an expired bucket with it, so a frame is judged the same whoever reads it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from maskwatch.detections import Counts
from maskwatch.frames import (
    ERR_UNKNOWN_CAMERA,
    MAX_FRAME_BYTES,
    MAX_PIXELS,
    Frame,
    FrameError,
    camera_of,
    dead_letter,
    parse_message,
    seq_of,
)
from maskwatch.store import TP, BatchWrite, Seen

if TYPE_CHECKING:  # maskwatch.settings imports this module
    from maskwatch.settings import FrameSettings

# a frame older than this when read is counted `dropped_stale` (MW_MAX_FRAME_AGE_S moves it for the workers)
DEFAULT_MAX_AGE_MS = 2000


class Record(Protocol):
    """A consumed message, as kafka-python's ConsumerRecord has it."""

    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int | None: ...


@dataclass(frozen=True)
class FrameLimits:
    """What a consumed frame may be: its bytes and JPEG pixels (else dead-lettered), its age (else counted stale)."""

    max_bytes: int
    max_pixels: int
    max_age_ms: int

    @classmethod
    def default(cls) -> FrameLimits:
        """Contract 1's defaults (the worker's settings' defaults)."""
        return cls(MAX_FRAME_BYTES, MAX_PIXELS, DEFAULT_MAX_AGE_MS)

    @classmethod
    def of(cls, s: FrameSettings) -> FrameLimits:
        return cls(s.max_frame_bytes, s.max_frame_pixels, int(s.max_frame_age_s * 1000))


@dataclass(frozen=True)
class DeadLetter:
    """A message for the dead-letter topic: the rejected message's key, its value and headers with `mw-error`."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    reason: str

    @classmethod
    def of(cls, key: bytes | None, value: bytes | None, headers: Iterable[tuple[str, bytes]] | None, reason: str) -> DeadLetter:
        out_headers, out_value = dead_letter(headers, value, reason)
        return cls(key, out_value, out_headers, reason)

    @classmethod
    def of_frame(cls, frame: Frame, reason: str) -> DeadLetter:
        """A valid frame the model refused, as it came."""
        return cls.of(frame.key, frame.jpeg, frame.headers(), reason)


@dataclass(frozen=True)
class Rejection:
    """A record not asked about, as the log names it (`camera` None when its key is no valid id)."""

    camera: str | None
    tp: TP
    offset: int
    reason: str
    error: str


@dataclass(frozen=True)
class Copy:
    """A second copy of a frame already read (a producer retry wrote it twice): skipped, counted nowhere."""

    camera: str
    tp: TP
    offset: int
    seq: int


@dataclass
class Intake:
    """A polled batch sorted: what its transaction writes so far, the frames for the model, the dead letters."""

    batch: BatchWrite
    frames: list[tuple[TP, Frame]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    copies: list[Copy] = field(default_factory=list)
    records: int = 0


def intake(
    polled: Mapping[TP, Sequence[Record]],
    seen: Mapping[TP, Seen],
    now_ms: int,
    limits: FrameLimits,
    counts_camera: Callable[[str], bool],
) -> Intake:
    """Sort a poll's records (by topic partition, in offset order) into frames to count and what is not asked about.

    A copy of a frame `seen` in its partition already is skipped. A message breaking Contract 1 is dead-lettered
    with its reason; when its key names a camera that is counted it is counted `invalid` (its `mw-seq` still shows
    frames lost before it). A valid frame of a camera the site does not list is dead-lettered `unknown_camera` and
    counted nowhere. A frame older than `max_age_ms` is counted `dropped_stale`. Each partition's offsets span all
    its records, whatever became of them, and what `seen` learnt goes with them.
    """
    out = Intake(BatchWrite())
    for tp, recs in polled.items():
        if not recs:
            continue
        out.batch.start_offsets[tp] = recs[0].offset
        out.batch.next_offsets[tp] = recs[-1].offset + 1
        for rec in recs:
            out.records += 1
            sort_record(out, tp, rec, seen[tp], now_ms, limits, counts_camera)
        out.batch.seen[tp] = seen[tp].take_changes()
    return out


def sort_record(
    out: Intake, tp: TP, rec: Record, seen: Seen, now_ms: int, limits: FrameLimits, counts_camera: Callable[[str], bool]
) -> None:
    """One record: a copy skipped, a message rejected, a frame counted stale, or a frame for the model."""
    cid, run_seq = camera_of(rec.key), seq_of(rec.headers)
    if cid is not None and run_seq is not None and not seen.first_time(cid, *run_seq):
        out.copies.append(Copy(cid, tp, rec.offset, run_seq[1]))
        return
    try:
        frame = parse_message(rec.key, rec.value, rec.headers, limits.max_bytes, limits.max_pixels)
    except FrameError as e:
        _reject(out, tp, rec, e.reason, str(e), counts_camera, rec.timestamp or now_ms)
        return
    if not counts_camera(frame.camera_id):  # counted nowhere: no camera comes from nowhere
        out.dead.append(DeadLetter.of(rec.key, rec.value, rec.headers, ERR_UNKNOWN_CAMERA))
        out.rejected.append(Rejection(frame.camera_id, tp, rec.offset, ERR_UNKNOWN_CAMERA, ERR_UNKNOWN_CAMERA))
        return
    out.batch.see(tp, frame.camera_id, frame.producer, frame.seq, frame.ts_ms)
    if now_ms - frame.ts_ms > limits.max_age_ms:
        out.batch.add(tp, frame.camera_id, frame.ts_ms, Counts(dropped_stale=1))
        return
    out.frames.append((tp, frame))


def _reject(out: Intake, tp: TP, rec: Record, reason: str, error: str, counts_camera: Callable[[str], bool], ts_ms: int) -> None:
    """A record breaking Contract 1: dead-lettered; counted `invalid` (with its `mw-seq`) when its camera is counted."""
    cid = camera_of(rec.key)
    out.dead.append(DeadLetter.of(rec.key, rec.value, rec.headers, reason))
    out.rejected.append(Rejection(cid, tp, rec.offset, reason, error))
    if cid is not None and counts_camera(cid):
        out.batch.add(tp, cid, ts_ms, Counts(invalid=1))
        seen = seq_of(rec.headers)
        if seen is not None:
            out.batch.see(tp, cid, *seen, ts_ms)
