"""HTTP(S) cameras: MJPEG (multipart/x-mixed-replace) parsed here with a read timeout, JPEG snapshot URLs polled
at the target rate, and any other HTTP video handed to FFmpeg."""

from __future__ import annotations

import logging
import re
import time
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3

from maskwatch.site import redact
from producer.sources.base import Captured, SourceError, now_ms
from producer.sources.ffmpeg import CaptureReader, open_stream
from producer.sources.live import LiveSource, Stop

logger = logging.getLogger(__name__)

JPEG_SOI = b"\xff\xd8"
MAX_PART_BYTES = 16 * 1024 * 1024
CHUNK = 64 * 1024
USER_AGENT = "maskwatch-producer/1"
_BOUNDARY_RE = re.compile(r'boundary\s*=\s*"?([^";,]+)"?', re.IGNORECASE)
_LENGTH_RE = re.compile(rb"^content-length\s*:\s*(\d+)\s*$", re.IGNORECASE | re.MULTILINE)


class MultipartError(ValueError):
    """The stream is not the multipart JPEG stream it claims to be."""


def boundary_of(content_type: str) -> str | None:
    m = _BOUNDARY_RE.search(content_type)
    return m.group(1).strip() if m else None


class MultipartJpegParser:
    """Incremental parser for multipart/x-mixed-replace: feed bytes as they arrive, get whole JPEG parts back.

    Tolerates what real cameras send: a boundary declared with or without its leading dashes, parts
    with or without Content-Length (with it, a part is returned as soon as it is complete; without it,
    when the next boundary arrives), LF instead of CRLF, and stray bytes between parts. Parts that are
    not JPEG are skipped and counted.
    """

    def __init__(self, boundary: str, max_part_bytes: int = MAX_PART_BYTES) -> None:
        token = boundary.strip().lstrip("-")
        if not token:
            raise MultipartError("empty boundary")
        self.delim = b"--" + token.encode("latin-1")
        self.max_part_bytes = max_part_bytes
        self.buf = bytearray()
        self.in_part = False  # past a boundary line, reading headers or body
        self.length: int | None = None  # body length of the current part, once its headers are read
        self.body_at = -1  # offset of the current part's body in buf, once its headers are read
        self.skipped = 0

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        out: list[bytes] = []
        while True:
            part = self._next()
            if part is None:
                break
            if part.startswith(JPEG_SOI):
                out.append(part)
            else:
                self.skipped += 1
        if len(self.buf) > self.max_part_bytes:
            raise MultipartError(f"no complete part in {len(self.buf)} bytes")
        return out

    def _line_delim(self, start: int) -> int:
        """Where the next delimiter line begins: the boundary at the start of a line, after any extra
        dashes (a boundary declared as `--x` is written `----x` by some servers and `--x` by others)."""
        buf, k = self.buf, start
        while True:
            k = buf.find(self.delim, k)
            if k < 0:
                return -1
            i = k
            while i > start and buf[i - 1] == 0x2D:  # "-"
                i -= 1
            if i > start and buf[i - 1] == 0x0A:  # "\n"
                return i
            k += 1

    def _next(self) -> bytes | None:
        buf = self.buf
        if not self.in_part:
            i = buf.find(self.delim)
            if i < 0:
                del buf[: max(0, len(buf) - len(self.delim))]  # keep a possible partial delimiter
                return None
            eol = buf.find(b"\n", i)
            if eol < 0:
                return None
            del buf[: eol + 1]
            self.in_part, self.length, self.body_at = True, None, -1
        if self.body_at < 0:
            end, sep = buf.find(b"\r\n\r\n"), 4
            lf = buf.find(b"\n\n")
            if lf >= 0 and (end < 0 or lf < end):
                end, sep = lf, 2
            if end < 0:
                if len(buf) > 8192:
                    raise MultipartError("part headers too long")
                return None
            m = _LENGTH_RE.search(bytes(buf[:end]))
            self.length = int(m.group(1)) if m else None
            self.body_at = end + sep
        if self.length is not None:
            if len(buf) < self.body_at + self.length:
                return None
            part = bytes(buf[self.body_at : self.body_at + self.length])
            del buf[: self.body_at + self.length]
        else:
            j = self._line_delim(self.body_at)
            if j < 0:
                return None
            part = bytes(buf[self.body_at : j]).rstrip(b"\r\n")
            del buf[:j]
        self.in_part = False
        return part


def _split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=host)), (parts.username, parts.password or "")


class HttpSource(LiveSource):
    """An HTTP(S) camera. What it is, is learnt from the answer's Content-Type: multipart → MJPEG,
    image/jpeg → a snapshot URL (fetched once per sampling period), anything else → FFmpeg, unless the
    site file forced MJPEG with `mjpeg+http(s)://`."""

    def __init__(
        self, url: str, fps: float, open_timeout_s: float, read_timeout_s: float, force_mjpeg: bool = False
    ) -> None:
        super().__init__(redact(url), open_timeout_s, read_timeout_s)
        self.url, self.auth = _split_credentials(url)
        self.full_url = url
        self.period_s = 1.0 / fps
        self.fps = fps
        self.force_mjpeg = force_mjpeg
        self.mode = ""  # mjpeg | snapshot | ffmpeg, once connected
        self.session: requests.Session | None = None
        self.resp: requests.Response | None = None
        self.parser: MultipartJpegParser | None = None
        self.ffmpeg: CaptureReader | None = None
        self._next_snapshot = 0.0
        self._pending: bytes | None = None  # a snapshot fetched but not yet handed over

    # ---- HTTP ------------------------------------------------------------------------------------

    def _get(self) -> requests.Response:
        assert self.session is not None
        timeout = (self.open_timeout_s, self.read_timeout_s)
        try:
            resp = self.session.get(self.url, stream=True, timeout=timeout, auth=self._auth())
            if resp.status_code == 401 and self.auth and "digest" in resp.headers.get("WWW-Authenticate", "").lower():
                resp.close()
                self.session.auth = requests.auth.HTTPDigestAuth(*self.auth)
                resp = self.session.get(self.url, stream=True, timeout=timeout)
        except requests.RequestException as e:
            raise SourceError(f"{self.name}: {type(e).__name__}: {e}") from None
        if resp.status_code != 200:
            resp.close()
            raise SourceError(f"{self.name}: HTTP {resp.status_code} {resp.reason}")
        return resp

    def _auth(self) -> tuple[str, str] | None:
        return None if self.session is not None and self.session.auth is not None else self.auth

    def _read_chunk(self) -> bytes:
        assert self.resp is not None
        try:
            data = self.resp.raw.read1(CHUNK)
        except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as e:
            raise SourceError(f"{self.name}: {type(e).__name__}: {e}") from None
        if not data:
            raise SourceError(f"{self.name}: stream ended")
        return bytes(data)

    def _read_all(self, resp: requests.Response) -> bytes:
        """A snapshot's whole body, refusing one larger than any frame could be."""
        body = bytearray()
        try:
            while chunk := resp.raw.read(CHUNK):
                body += chunk
                if len(body) > MAX_PART_BYTES:
                    raise SourceError(f"{self.name}: snapshot larger than {MAX_PART_BYTES} bytes")
        except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as e:
            raise SourceError(f"{self.name}: {type(e).__name__}: {e}") from None
        finally:
            resp.close()
        return bytes(body)

    # ---- the grabber -------------------------------------------------------------------------------

    def _connect(self) -> None:
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        resp = self._get()
        ctype = resp.headers.get("Content-Type", "")
        if ctype.lower().startswith("multipart/") or self.force_mjpeg:
            boundary = boundary_of(ctype)
            if boundary is None:
                resp.close()
                raise SourceError(f"{self.name}: not an MJPEG stream (Content-Type {ctype or 'missing'})")
            self.mode, self.resp, self.parser = "mjpeg", resp, MultipartJpegParser(boundary)
        elif ctype.lower().startswith("image/jpeg"):
            self.mode = "snapshot"
            self._pending = self._read_all(resp)
            self._next_snapshot = time.monotonic() + self.period_s
        else:
            resp.close()
            self.mode = "ffmpeg"
            self.ffmpeg = CaptureReader(
                self.name, lambda: open_stream(self.full_url, self.open_timeout_s, self.read_timeout_s), self.fps
            )
            self.ffmpeg.connect()
        logger.info("http source connected source=%s mode=%s", self.name, self.mode)

    def _grab(self) -> Captured | None:
        if self.mode == "mjpeg":
            assert self.parser is not None
            while True:
                if self.closing:
                    raise Stop()
                try:
                    parts = self.parser.feed(self._read_chunk())
                except MultipartError as e:
                    raise SourceError(f"{self.name}: {e}") from None
                if parts:
                    return Captured(now_ms(), jpeg=parts[-1])  # the freshest; older ones were never sampled
        if self.mode == "snapshot":
            return self._snapshot()
        assert self.ffmpeg is not None
        return self.ffmpeg.grab()

    def _snapshot(self) -> Captured:
        if self._pending is None:
            wait = self._next_snapshot - time.monotonic()
            if wait > 0 and self._closing.wait(wait):
                raise Stop()
            self._next_snapshot = time.monotonic() + self.period_s
            self._pending = self._read_all(self._get())
        body, self._pending = self._pending, None
        if not body.startswith(JPEG_SOI):
            raise SourceError(f"{self.name}: snapshot is not a JPEG")
        return Captured(now_ms(), jpeg=body)

    def _release(self) -> None:
        if self.resp is not None:
            self.resp.close()
            self.resp = None
        if self.ffmpeg is not None:
            self.ffmpeg.release()
            self.ffmpeg = None
        if self.session is not None:
            self.session.close()
            self.session = None
