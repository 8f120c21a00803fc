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
H_TRUNCATED = "mw-truncated"

CAMERA_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
JPEG_MAGIC = b"\xff\xd8\xff"
MAX_FRAME_BYTES = 4 * 1024 * 1024
MAX_SIDE = 8192
# Default cap on an image's pixels, read from its header before anything decodes it: fits 4K (4096x2160, 3840x2160).
MAX_PIXELS = 4096 * 2160
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A dead letter's value is cut to this (and says so in `mw-truncated`) so the send never fails on size: under the
# clients' default request size (1 MiB), headers and all.
DLQ_MAX_VALUE_BYTES = 512 * 1024
# where rejected messages go, with their reason in `mw-error` (MW_DLQ_TOPIC moves it)
DLQ_TOPIC = "frames.dlq"
JPEG_TYPE = "image/jpeg"
PNG_TYPE = "image/png"
# JPEG start-of-frame markers (they carry the size): C0..CF but DHT (C4), JPG (C8), DAC (CC)
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}

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
ERR_UNKNOWN_CAMERA = "unknown_camera"  # a valid id that the site does not list (no producer registered it)
REJECTION_REASONS = frozenset(
    {
        ERR_UNKNOWN_CAMERA,
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


@dataclass(frozen=True)
class ImageSize:
    """An image's media type and size, as its header announces them (nothing decoded)."""

    media_type: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def image_size(raw: bytes) -> ImageSize | None:
    """Type and size read from a JPEG's start-of-frame or a PNG's IHDR, without decoding; None for anything else.

    Cheap and bounded: it walks the JPEG's marker segments by their lengths and never looks at pixel data, so a
    few hundred bytes claiming 20000x20000 are caught before anything allocates for them.
    """
    if raw.startswith(PNG_SIGNATURE):
        if len(raw) < 24 or raw[12:16] != b"IHDR":
            return None
        w, h = int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")
        return ImageSize(PNG_TYPE, w, h) if w and h else None
    if not raw.startswith(b"\xff\xd8"):
        return None
    i = 2
    while i + 4 <= len(raw):
        if raw[i] != 0xFF:
            return None
        marker = raw[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _SOF:
            if i + 9 > len(raw):
                return None
            h, w = int.from_bytes(raw[i + 5 : i + 7], "big"), int.from_bytes(raw[i + 7 : i + 9], "big")
            return ImageSize(JPEG_TYPE, w, h) if w and h else None
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        i += 2 + int.from_bytes(raw[i + 2 : i + 4], "big")
    return None


def check_pixels(size: ImageSize, max_pixels: int) -> None:
    """Raise FrameError(too_large) when `size` has more pixels than `max_pixels`."""
    if size.pixels > max_pixels:
        raise FrameError(ERR_TOO_LARGE, f"{size.width}x{size.height} pixels > {max_pixels}")


def reduced_decode_factor(size: ImageSize, min_side: int) -> int:
    """The largest libjpeg DCT scale (1, 2, 4 or 8) keeping the shorter side at least `min_side` pixels.

    Decoding at 1/2, 1/4 or 1/8 scale (OpenCV's IMREAD_REDUCED_*) costs that much less memory and time.
    """
    shorter = min(size.width, size.height)
    for factor in (8, 4, 2):
        if size.media_type == JPEG_TYPE and shorter // factor >= min_side:
            return factor
    return 1


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
    max_pixels: int = MAX_PIXELS,
) -> Frame:
    """Validate a consumed message and return its Frame, or raise FrameError with a documented reason.

    Checks the envelope (version, key, headers, bytes, JPEG magic) and the JPEG header's size against
    `max_pixels` (too_large) and against `mw-w`/`mw-h` (bad_size), all before anything decodes the image;
    whether the rest of the JPEG really decodes is found out by the model, which decodes it.
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
    frame = Frame(
        camera_id=camera_id,
        jpeg=bytes(value),
        seq=_int_header(h, H_SEQ),
        ts_ms=_int_header(h, H_TS),
        width=_int_header(h, H_WIDTH),
        height=_int_header(h, H_HEIGHT),
        producer=h.get(H_PRODUCER, ""),
    )
    size = image_size(value)
    if size is None:
        raise FrameError(ERR_UNDECODABLE, "no JPEG start-of-frame header")
    check_pixels(size, max_pixels)
    if (size.width, size.height) != (frame.width, frame.height):
        raise FrameError(
            ERR_BAD_SIZE, f"{H_WIDTH}x{H_HEIGHT}={frame.width}x{frame.height} but the JPEG is {size.width}x{size.height}"
        )
    return frame


def seq_of(headers: Sequence[tuple[str, bytes]] | None) -> tuple[str, int] | None:
    """(producer run, seq) of a message whose headers carry them, even one rejected for another reason."""
    h = {k: v for k, v in headers or []}
    try:
        return h[H_PRODUCER].decode(), int(h[H_SEQ])
    except (KeyError, ValueError, UnicodeDecodeError):
        return None


def camera_of(key: bytes | None) -> str | None:
    """The camera id a (possibly invalid) message belongs to, when its key is a valid id."""
    try:
        cid = (key or b"").decode("utf-8")
    except UnicodeDecodeError:
        return None
    return cid if is_valid_camera_id(cid) else None


def dead_letter(
    headers: Iterable[tuple[str, bytes | None]] | None,
    value: bytes | None,
    reason: str,
    max_value_bytes: int = DLQ_MAX_VALUE_BYTES,
) -> tuple[list[tuple[str, bytes]], bytes | None]:
    """(headers, value) of the dead letter for a rejected message: its headers plus `mw-error`, and its value.

    A value over `max_value_bytes` is cut to that many bytes and `mw-truncated` holds its original length, so a
    message rejected for its size still reaches the dead-letter topic instead of failing the send.
    """
    out = [(k, v or b"") for k, v in headers or () if isinstance(k, str) and k not in (H_ERROR, H_TRUNCATED)]
    out.append((H_ERROR, reason.encode()))
    if value is not None and len(value) > max_value_bytes:
        out.append((H_TRUNCATED, str(len(value)).encode()))
        value = value[:max_value_bytes]
    return out, value
