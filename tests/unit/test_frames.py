"""Contract 1: headers round-trip, camera ids, and every rejection reason."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maskwatch import frames as F


def jpeg(width: int, height: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.zeros((height, width, 3), np.uint8))
    assert ok
    return buf.tobytes()


def claiming(raw: bytes, width: int, height: int) -> bytes:
    """`raw` (a JPEG) with its start-of-frame header rewritten to announce width x height: a header bomb."""
    i = raw.index(b"\xff\xc0")
    return raw[: i + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + raw[i + 9 :]


JPEG = jpeg(640, 480)


def make(**kw: object) -> F.Frame:
    base: dict[str, object] = dict(camera_id="gate-a.1", jpeg=JPEG, seq=7, ts_ms=1_700_000_000_000, width=640, height=480, producer="p1")
    base.update(kw)
    return F.Frame(**base)  # type: ignore[arg-type]


def test_headers_round_trip() -> None:
    f = make()
    back = F.parse_message(f.key, f.jpeg, f.headers())
    assert back == f
    names = [h for h, _ in f.headers()]
    assert names == ["mw-v", "mw-camera", "mw-seq", "mw-ts", "mw-w", "mw-h", "mw-producer"]


@pytest.mark.parametrize(
    ("cid", "ok"),
    [
        ("cam1", True),
        ("Gate_A.entrance-2", True),
        ("a" * 64, True),
        ("a" * 65, False),
        ("-leading-dash", False),
        ("_x", False),
        ("", False),
        ("has space", False),
        ("slash/no", False),
        ("ümlaut", False),
        ("cam\n", False),
    ],
)
def test_camera_id(cid: str, ok: bool) -> None:
    assert F.is_valid_camera_id(cid) is ok
    if not ok:
        with pytest.raises(F.FrameError) as e:
            F.check_camera_id(cid)
        assert e.value.reason == F.ERR_BAD_CAMERA


def _headers(**over: bytes | None) -> list[tuple[str, bytes]]:
    h = dict(make().headers())
    for k, v in over.items():
        name = k.replace("_", "-")
        if v is None:
            h.pop(name, None)
        else:
            h[name] = v
    return list(h.items())


@pytest.mark.parametrize(
    ("key", "value", "headers", "reason"),
    [
        (b"cam1", JPEG, _headers(mw_v=None), F.ERR_NO_VERSION),
        (b"cam1", JPEG, _headers(mw_v=b"2"), F.ERR_BAD_VERSION),
        (b"bad key!", JPEG, _headers(mw_camera=b"bad key!"), F.ERR_BAD_CAMERA),
        (b"\xff\xfe", JPEG, _headers(), F.ERR_BAD_CAMERA),
        (None, JPEG, _headers(), F.ERR_BAD_CAMERA),
        (b"cam1", JPEG, _headers(mw_camera=b"cam2"), F.ERR_CAMERA_MISMATCH),
        (b"gate-a.1", b"", _headers(), F.ERR_NOT_JPEG),
        (b"gate-a.1", b"\x89PNG\r\n", _headers(), F.ERR_NOT_JPEG),
        (b"gate-a.1", JPEG + b"\x00" * (F.MAX_FRAME_BYTES), _headers(), F.ERR_TOO_LARGE),
        (b"gate-a.1", JPEG, _headers(mw_w=b"0"), F.ERR_BAD_SIZE),
        (b"gate-a.1", JPEG, _headers(mw_h=b"99999"), F.ERR_BAD_SIZE),
        (b"gate-a.1", JPEG, _headers(mw_seq=b"seven"), F.ERR_BAD_HEADER),
        (b"gate-a.1", JPEG, _headers(mw_ts=None), F.ERR_BAD_HEADER),
        (b"gate-a.1", JPEG, _headers(mw_ts=b"-5"), F.ERR_BAD_HEADER),
        (b"gate-a.1", JPEG, _headers(mw_w=b"320"), F.ERR_BAD_SIZE),
        (b"gate-a.1", JPEG, _headers(mw_h=b"481"), F.ERR_BAD_SIZE),
        (b"gate-a.1", claiming(JPEG, 12000, 12000), _headers(), F.ERR_TOO_LARGE),
        (b"gate-a.1", claiming(JPEG, 4097, 2160), _headers(), F.ERR_TOO_LARGE),
        (b"gate-a.1", JPEG[:20] + b"\x00" * 200, _headers(), F.ERR_UNDECODABLE),
        (b"gate-a.1", b"\xff\xd8\xff\xe0" + b"\x00" * 32, _headers(), F.ERR_UNDECODABLE),
    ],
)
def test_rejections(key: bytes | None, value: bytes, headers: list[tuple[str, bytes]], reason: str) -> None:
    with pytest.raises(F.FrameError) as e:
        F.parse_message(key, value, headers)
    assert e.value.reason == reason
    assert reason in F.REJECTION_REASONS


@settings(max_examples=300, deadline=None)
@given(
    key=st.one_of(st.none(), st.binary(max_size=80), st.text(max_size=70).map(str.encode)),
    value=st.one_of(st.none(), st.binary(max_size=64), st.just(JPEG)),
    headers=st.lists(
        st.tuples(
            st.sampled_from(["mw-v", "mw-camera", "mw-seq", "mw-ts", "mw-w", "mw-h", "mw-producer", "x"]),
            st.one_of(st.none(), st.binary(max_size=20), st.integers(-10, 10**13).map(lambda i: str(i).encode())),
        ),
        max_size=10,
    ),
)
def test_validation_never_raises_anything_else(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes | None]]) -> None:
    try:
        F.parse_message(key, value, headers)
    except F.FrameError as e:
        assert e.reason in F.REJECTION_REASONS


def test_pixel_cap_is_a_parameter() -> None:
    big = jpeg(1920, 1080)
    headers = _headers(mw_w=b"1920", mw_h=b"1080")
    assert F.parse_message(b"gate-a.1", big, headers).width == 1920
    with pytest.raises(F.FrameError) as e:
        F.parse_message(b"gate-a.1", big, headers, max_pixels=1920 * 1080 - 1)
    assert e.value.reason == F.ERR_TOO_LARGE


def test_header_bomb_size_read_without_decoding() -> None:
    assert F.image_size(claiming(JPEG, 20000, 2000)) == F.ImageSize(F.JPEG_TYPE, 20000, 2000)


@pytest.mark.parametrize(
    ("width", "height", "min_side", "factor"),
    [
        (640, 480, 480, 1),
        (3840, 2160, 480, 4),
        (4096, 2160, 480, 4),
        (1920, 1080, 480, 2),
        (8000, 4000, 480, 8),
        (959, 959, 480, 1),
    ],
)
def test_reduced_decode_factor(width: int, height: int, min_side: int, factor: int) -> None:
    assert F.reduced_decode_factor(F.ImageSize(F.JPEG_TYPE, width, height), min_side) == factor


def test_reduced_decode_only_for_jpeg() -> None:
    assert F.reduced_decode_factor(F.ImageSize(F.PNG_TYPE, 8000, 8000), 480) == 1


def test_dead_letter_keeps_headers_and_a_truncated_value() -> None:
    f = make()
    huge = JPEG + b"\x00" * (20 * 1024 * 1024)
    headers, value = F.dead_letter(f.headers(), huge, F.ERR_TOO_LARGE)
    h = dict(headers)
    assert h[F.H_ERROR] == b"too_large" and h[F.H_CAMERA] == b"gate-a.1" and h[F.H_SEQ] == b"7"
    assert h[F.H_TRUNCATED] == str(len(huge)).encode()
    assert value == huge[: F.DLQ_MAX_VALUE_BYTES]


def test_dead_letter_small_value_untouched() -> None:
    headers, value = F.dead_letter([("mw-v", b"1"), (F.H_ERROR, b"old")], b"abc", F.ERR_NOT_JPEG)
    assert value == b"abc" and headers == [("mw-v", b"1"), (F.H_ERROR, b"not_jpeg")]
