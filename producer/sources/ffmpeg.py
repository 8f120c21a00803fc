"""RTSP and HTTP(S) video streams through OpenCV's FFmpeg backend, and webcams by index, as live sources."""

from __future__ import annotations

import base64
import hashlib
import socket
import time
from collections.abc import Callable
from urllib.parse import unquote, urlsplit, urlunsplit

import cv2

from maskwatch.site import redact
from producer.sources.base import Captured, SourceError, now_ms
from producer.sources.live import LiveSource


def open_stream(url: str, open_timeout_s: float, read_timeout_s: float) -> cv2.VideoCapture:
    """An FFmpeg capture with FFmpeg's own open and read timeouts, so a dead stream fails within seconds."""
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
        int(open_timeout_s * 1000),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC,
        int(read_timeout_s * 1000),
    ]
    cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
    if not cap.isOpened():
        cap.release()
        why = diagnose_rtsp(url, open_timeout_s) if url.lower().startswith("rtsp://") else ""
        raise SourceError(f"cannot open {redact(url)}" + (f": {why}" if why else ""))
    return cap


def _rtsp_request(sock: socket.socket, method: str, url: str, cseq: int, auth: str = "") -> tuple[int, dict[str, str]]:
    """One RTSP request on `sock`: (status code, headers in lower case) of the answer."""
    lines = [f"{method} {url} RTSP/1.0", f"CSeq: {cseq}", "Accept: application/sdp", "User-Agent: maskwatch"]
    if auth:
        lines.append(f"Authorization: {auth}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf and len(buf) < 65536:
        chunk = sock.recv(4096)
        if not chunk:
            break
        buf += chunk
    head = buf.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    parts = head[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("RTSP/") or not parts[1].isdigit():
        raise ValueError("not an RTSP answer")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
    return int(parts[1]), headers


def _digest(challenge: str, user: str, password: str, method: str, uri: str) -> str:
    """The Authorization header answering an RTSP Digest challenge (RFC 2617 without qop, as cameras use it)."""
    fields = {}
    for item in challenge.removeprefix("Digest").split(","):
        k, _, v = item.strip().partition("=")
        fields[k.lower()] = v.strip('"')
    realm, nonce = fields.get("realm", ""), fields.get("nonce", "")
    ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()  # noqa: S324 - the protocol's hash
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()  # noqa: S324
    response = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()  # noqa: S324
    return f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", response="{response}"'


def diagnose_rtsp(url: str, timeout_s: float) -> str:
    """Why FFmpeg could not open an RTSP stream, in the words an operator acts on: unknown host, connection refused,
    timed out, unauthorized, stream not found, or (when the server describes the stream) an undecodable stream."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 554
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except socket.gaierror:
        return f"unknown host {host}"
    except ConnectionRefusedError:
        return f"connection refused by {host}:{port}"
    except TimeoutError:
        return f"connection to {host}:{port} timed out after {timeout_s:.0f}s"
    except OSError as e:
        return f"cannot connect to {host}:{port}: {e.strerror or e}"
    netloc = host if parts.port is None else f"{host}:{port}"
    bare = urlunsplit(parts._replace(netloc=netloc))  # credentials go in the Authorization header, never the line
    try:
        with sock:
            code, headers = _rtsp_request(sock, "DESCRIBE", bare, 1)
            user, password = unquote(parts.username or ""), unquote(parts.password or "")
            challenge = headers.get("www-authenticate", "")
            if code == 401 and user and challenge.lower().startswith("digest"):
                code, headers = _rtsp_request(sock, "DESCRIBE", bare, 2, _digest(challenge, user, password, "DESCRIBE", bare))
            elif code == 401 and user and challenge.lower().startswith("basic"):
                token = base64.b64encode(f"{user}:{password}".encode()).decode()
                code, headers = _rtsp_request(sock, "DESCRIBE", bare, 2, f"Basic {token}")
    except TimeoutError:
        return f"{host}:{port} accepted the connection but sent no RTSP answer within {timeout_s:.0f}s"
    except (OSError, ValueError) as e:
        return f"{host}:{port} does not speak RTSP ({e})"
    if code == 401:
        return "unauthorized: check the user and password in the URL" if parts.username else "unauthorized: the camera needs a user and password in the URL"
    if code == 404:
        return "no such stream on the camera (RTSP 404): check the path"
    if code >= 300:
        return f"the camera answered RTSP {code}"
    return "the camera describes the stream but it could not be decoded (undecodable stream)"


class CaptureReader:
    """Reads an OpenCV capture on the grabber thread: grabs every frame the device delivers (keeping the
    stream drained) but converts only those that may be sampled, at most two per sampling period, so a
    30 fps camera sampled at 5 fps pays 10 colour conversions a second, not 30."""

    def __init__(self, name: str, opener: Callable[[], cv2.VideoCapture], fps: float) -> None:
        self.name = name
        self.opener = opener
        self.min_interval_s = 0.5 / fps
        self.cap: cv2.VideoCapture | None = None
        self._last_retrieve = 0.0

    def connect(self) -> None:
        self.cap = self.opener()
        self._last_retrieve = 0.0

    def grab(self) -> Captured | None:
        if self.cap is None:
            raise SourceError(f"{self.name}: not open")
        if not self.cap.grab():
            raise SourceError(f"{self.name}: read failed or timed out")
        now = time.monotonic()
        if now - self._last_retrieve < self.min_interval_s:
            return None
        ok, frame = self.cap.retrieve()
        if not ok or frame is None:
            raise SourceError(f"{self.name}: frame could not be decoded")
        self._last_retrieve = now
        return Captured(now_ms(), image=frame)

    def release(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class StreamSource(LiveSource):
    """`rtsp(s)://…` through FFmpeg."""

    def __init__(self, url: str, fps: float, open_timeout_s: float, read_timeout_s: float) -> None:
        super().__init__(redact(url), open_timeout_s, read_timeout_s)
        self.reader = CaptureReader(self.name, lambda: open_stream(url, open_timeout_s, read_timeout_s), fps)

    def _connect(self) -> None:
        self.reader.connect()

    def _grab(self) -> Captured | None:
        return self.reader.grab()

    def _release(self) -> None:
        self.reader.release()


def _open_webcam(index: int) -> cv2.VideoCapture:
    cap = cv2.VideoCapture(index)
    if not cap.isOpened():
        cap.release()
        raise SourceError(f"cannot open webcam {index}")
    return cap


class WebcamSource(LiveSource):
    """A local camera by index (`webcam:0`), through OpenCV's default backend (V4L2 on Linux)."""

    def __init__(self, index: int, fps: float, open_timeout_s: float, read_timeout_s: float) -> None:
        super().__init__(f"webcam:{index}", open_timeout_s, read_timeout_s)
        self.reader = CaptureReader(self.name, lambda: _open_webcam(index), fps)

    def _connect(self) -> None:
        self.reader.connect()

    def _grab(self) -> Captured | None:
        return self.reader.grab()

    def _release(self) -> None:
        self.reader.release()
