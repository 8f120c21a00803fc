"""The frame message (Contract 1): key, JPEG value and `mw-*` headers, built and validated in one place."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

FRAME_VERSION = "1"

H_VERSION = "mw-v"
H_CAMERA = "mw-camera"
H_SEQ = "mw-seq"
H_TS = "mw-ts"
H_WIDTH = "mw-w"
H_HEIGHT = "mw-h"
H_PRODUCER = "mw-producer"
H_ERROR = "mw-error"

CAMERA_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
JPEG_MAGIC = b"\xff\xd8\xff"
MAX_FRAME_BYTES = 4 * 1024 * 1024
MAX_SIDE = 8192

# Documented rejection reasons (the value of `mw-error` on a dead-lettered message).
ERR_NO_VERSION = "no_version"
ERR_BAD_VERSION = "unknown_version"
ERR_BAD_CAMERA = "bad_camera_id"
ERR_CAMERA_MISMATCH = "camera_mismatch"
ERR_BAD_HEADER = "bad_header"
ERR_NOT_JPEG = "not_jpeg"
ERR_TOO_LARGE = "too_large"
ERR_BAD_SIZE = "bad_size"
ERR_UNDECODABLE = "undecodable"
ERR_MODEL_OUTPUT = "model_output_malformed"
REJECTION_REASONS = frozenset(
    {
        ERR_NO_VERSION,
        ERR_BAD_VERSION,
        ERR_BAD_CAMERA,
        ERR_CAMERA_MISMATCH,
        ERR_BAD_HEADER,
        ERR_NOT_JPEG,
        ERR_TOO_LARGE,
        ERR_BAD_SIZE,
        ERR_UNDECODABLE,
        ERR_MODEL_OUTPUT,
    }
)

Headers = Sequence[tuple[str, bytes]]


class FrameError(ValueError):
    """A message that breaks Contract 1; `reason` is one of REJECTION_REASONS."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def is_valid_camera_id(camera_id: str) -> bool:
    """True when `camera_id` matches Contract 1's pattern."""
    return bool(CAMERA_ID_RE.fullmatch(camera_id))


def check_camera_id(camera_id: str) -> str:
    """Return `camera_id` unchanged, or raise FrameError(bad_camera_id)."""
    if not is_valid_camera_id(camera_id):
        raise FrameError(ERR_BAD_CAMERA, repr(camera_id)[:80])
    return camera_id


@dataclass(frozen=True)
class Frame:
    """One camera image as it crosses Kafka."""

    camera_id: str
    jpeg: bytes
    seq: int
    ts_ms: int
    width: int
    height: int
    producer: str

    def __post_init__(self) -> None:
        check_camera_id(self.camera_id)
        if self.seq < 0:
            raise FrameError(ERR_BAD_HEADER, f"{H_SEQ}={self.seq}")
        if self.ts_ms < 0:
            raise FrameError(ERR_BAD_HEADER, f"{H_TS}={self.ts_ms}")
        if not (0 < self.width <= MAX_SIDE and 0 < self.height <= MAX_SIDE):
            raise FrameError(ERR_BAD_SIZE, f"{self.width}x{self.height}")

    @property
    def key(self) -> bytes:
        return self.camera_id.encode("utf-8")

    def headers(self) -> list[tuple[str, bytes]]:
        """Kafka headers for this frame, UTF-8 strings per Contract 1."""
        return [
            (H_VERSION, FRAME_VERSION.encode()),
            (H_CAMERA, self.camera_id.encode()),
            (H_SEQ, str(self.seq).encode()),
            (H_TS, str(self.ts_ms).encode()),
            (H_WIDTH, str(self.width).encode()),
            (H_HEIGHT, str(self.height).encode()),
            (H_PRODUCER, self.producer.encode()),
        ]


def header_map(headers: Iterable[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """Headers as a str→str dict; undecodable values become the empty string."""
    out: dict[str, str] = {}
    for name, value in headers or ():
        if not isinstance(name, str):
            continue
        try:
            out[name] = (value or b"").decode("utf-8")
        except (UnicodeDecodeError, AttributeError):
            out[name] = ""
    return out


def _int_header(h: dict[str, str], name: str) -> int:
    raw = h.get(name)
    if raw is None:
        raise FrameError(ERR_BAD_HEADER, f"missing {name}")
    try:
        return int(raw)
    except ValueError:
        raise FrameError(ERR_BAD_HEADER, f"{name}={raw[:40]!r}") from None


def parse_message(
    key: bytes | None,
    value: bytes | None,
    headers: Iterable[tuple[str, bytes | None]] | None,
    max_bytes: int = MAX_FRAME_BYTES,
) -> Frame:
    """Validate a consumed message and return its Frame, or raise FrameError with a documented reason.

    Checks the envelope only (version, key, headers, size, JPEG magic); whether the
    JPEG really decodes is found out by the model, which decodes it.
    """
    h = header_map(headers)
    version = h.get(H_VERSION)
    if version is None:
        raise FrameError(ERR_NO_VERSION)
    if version != FRAME_VERSION:
        raise FrameError(ERR_BAD_VERSION, repr(version)[:40])
    try:
        camera_id = (key or b"").decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError(ERR_BAD_CAMERA, "key is not UTF-8") from None
    check_camera_id(camera_id)
    if h.get(H_CAMERA, camera_id) != camera_id:
        raise FrameError(ERR_CAMERA_MISMATCH, f"key={camera_id} header={h.get(H_CAMERA)!r}"[:120])
    if not value:
        raise FrameError(ERR_NOT_JPEG, "empty value")
    if len(value) > max_bytes:
        raise FrameError(ERR_TOO_LARGE, f"{len(value)} bytes > {max_bytes}")
    if not value.startswith(JPEG_MAGIC):
        raise FrameError(ERR_NOT_JPEG)
    return Frame(
        camera_id=camera_id,
        jpeg=bytes(value),
        seq=_int_header(h, H_SEQ),
        ts_ms=_int_header(h, H_TS),
        width=_int_header(h, H_WIDTH),
        height=_int_header(h, H_HEIGHT),
        producer=h.get(H_PRODUCER, ""),
    )


def camera_of(key: bytes | None) -> str | None:
    """The camera id a (possibly invalid) message belongs to, when its key is a valid id."""
    try:
        cid = (key or b"").decode("utf-8")
    except UnicodeDecodeError:
        return None
    return cid if is_valid_camera_id(cid) else None
