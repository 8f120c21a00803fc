"""The MJPEG (multipart/x-mixed-replace) parser, on what real cameras send."""

from __future__ import annotations

import pytest

from producer.sources.http import MultipartError, MultipartJpegParser, boundary_of

pytestmark = pytest.mark.timeout(30)

J1 = b"\xff\xd8\xff\xe0" + b"one" * 50 + b"\xff\xd9"
J2 = b"\xff\xd8\xff\xe0" + b"two--frame\r\n" * 20 + b"\xff\xd9"  # the boundary text inside a body must not split it


def part(body: bytes, boundary: str = "frame", length: bool = True, eol: bytes = b"\r\n") -> bytes:
    head = b"--" + boundary.encode() + eol + b"Content-Type: image/jpeg" + eol
    if length:
        head += b"Content-Length: " + str(len(body)).encode() + eol
    return head + eol + body + eol


@pytest.mark.parametrize(
    ("ctype", "boundary"),
    [
        ("multipart/x-mixed-replace; boundary=frame", "frame"),
        ('multipart/x-mixed-replace;boundary="--myboundary"', "--myboundary"),
        ("multipart/x-mixed-replace; BOUNDARY=abc; charset=x", "abc"),
        ("image/jpeg", None),
    ],
)
def test_boundary_of(ctype: str, boundary: str | None) -> None:
    assert boundary_of(ctype) == boundary


@pytest.mark.parametrize(
    ("declared", "stream", "expect"),
    [
        ("frame", part(J1) + part(J2) + part(J1), [J1, J2, J1]),
        ("--frame", part(J1) + part(J2), [J1, J2]),  # declared with the dashes it then writes
        ("--frame", part(J1, "--frame", length=False) + part(J2, "--frame"), [J1, J2]),  # or as RFC 2046 says
        ("frame", b"junk before\r\n" + part(J1) + part(J2), [J1, J2]),
        ("frame", part(J1, eol=b"\n") + part(J2, eol=b"\n"), [J1, J2]),
        ("frame", part(b"not a jpeg") + part(J1), [J1]),  # skipped, counted
        # without Content-Length a part ends at the next boundary (the last one waits for it)
        ("frame", part(J1, length=False) + part(J1, length=False) + part(J2, length=False), [J1, J1]),
    ],
)
@pytest.mark.parametrize("chunk", [1, 7, 100_000])
def test_parts_whatever_the_chunking(declared: str, stream: bytes, expect: list[bytes], chunk: int) -> None:
    p = MultipartJpegParser(declared)
    got: list[bytes] = []
    for i in range(0, len(stream), chunk):
        got += p.feed(stream[i : i + chunk])
    assert got == expect


def test_non_jpeg_parts_are_counted() -> None:
    p = MultipartJpegParser("frame")
    p.feed(part(b"<html>") + part(J1))
    assert p.skipped == 1


def test_garbage_without_parts_is_an_error_not_a_memory_leak() -> None:
    p = MultipartJpegParser("frame", max_part_bytes=10_000)
    with pytest.raises(MultipartError):
        p.feed(b"--frame\r\n\r\n" + b"x" * 20_000)


def test_stream_without_boundaries_keeps_little() -> None:
    p = MultipartJpegParser("frame", max_part_bytes=10_000)
    for _ in range(100):
        assert p.feed(b"y" * 1000) == []
    assert len(p.buf) < 100


def test_empty_boundary_is_refused() -> None:
    with pytest.raises(MultipartError):
        MultipartJpegParser("--")
