"""Why an RTSP camera cannot be opened, as the camera card and `maskwatch stats` show it (a fake RTSP server)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from producer.sources.ffmpeg import _digest, diagnose_rtsp

pytestmark = pytest.mark.timeout(30)

CHALLENGE = 'Digest realm="cam", nonce="n0nce"'


def _answer(code: int, extra: str = "") -> bytes:
    reason = {200: "OK", 401: "Unauthorized", 404: "Not Found", 503: "Service Unavailable"}[code]
    return f"RTSP/1.0 {code} {reason}\r\nCSeq: 1\r\n{extra}\r\n".encode()


def camera_401_then_digest(request: str) -> bytes:
    """A camera with Digest auth whose password is `right`."""
    for line in request.split("\r\n"):
        if line.startswith("Authorization: "):
            uri = request.split(" ")[1]
            ok = line.removeprefix("Authorization: ") == _digest(CHALLENGE, "admin", "right", "DESCRIBE", uri)
            return _answer(200) if ok else _answer(401, f"WWW-Authenticate: {CHALLENGE}\r\n")
    return _answer(401, f"WWW-Authenticate: {CHALLENGE}\r\n")


@pytest.fixture
def fake_rtsp() -> Iterator[Callable[[Callable[[str], bytes] | None], int]]:
    """Serve one behaviour (request text -> answer bytes; None: accept and say nothing) on a free port."""
    servers: list[socket.socket] = []

    def serve(behaviour: Callable[[str], bytes] | None) -> int:
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        servers.append(srv)

        def loop() -> None:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                while True:
                    data = b""
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(4096)
                        if not chunk:
                            return
                        data += chunk
                    if behaviour is None:
                        conn.recv(1)  # hold the connection, never answer
                        return
                    conn.sendall(behaviour(data.decode()))

        threading.Thread(target=loop, daemon=True).start()
        return int(srv.getsockname()[1])

    yield serve
    for s in servers:
        s.close()


def _refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again: nothing listens there


@pytest.mark.parametrize(
    ("behaviour", "userinfo", "expect"),
    [
        (lambda r: _answer(401, f"WWW-Authenticate: {CHALLENGE}\r\n"), "", "unauthorized: the camera needs a user and password"),
        (camera_401_then_digest, "admin:wrong@", "unauthorized: check the user and password"),
        (camera_401_then_digest, "admin:right@", "could not be decoded (undecodable stream)"),
        (lambda r: _answer(404), "", "no such stream on the camera (RTSP 404)"),
        (lambda r: _answer(503), "", "the camera answered RTSP 503"),
        (lambda r: b"HTTP/1.1 400 Bad Request\r\n\r\n", "", "does not speak RTSP"),
        (None, "", "sent no RTSP answer within 1s"),
    ],
)
def test_the_reason_names_what_to_fix(
    fake_rtsp: Callable[[Callable[[str], bytes] | None], int], behaviour: Callable[[str], bytes] | None, userinfo: str, expect: str
) -> None:
    port = fake_rtsp(behaviour)
    why = diagnose_rtsp(f"rtsp://{userinfo}127.0.0.1:{port}/stream1", 1.0)
    assert expect in why
    assert "right" not in why and "wrong" not in why  # never the password


def test_connection_refused() -> None:
    port = _refused_port()
    assert diagnose_rtsp(f"rtsp://127.0.0.1:{port}/s", 1.0) == f"connection refused by 127.0.0.1:{port}"
