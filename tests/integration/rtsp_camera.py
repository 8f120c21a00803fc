"""A real RTSP camera for the tests: GStreamer's RTSP server (Debian: gir1.2-gst-rtsp-server-1.0, python3-gi)
serving an MJPEG clip (Matroska) over RTP at the clip's own frame rate, until SIGTERM/SIGINT.

Runs under the system Python (`/usr/bin/python3 rtsp_camera.py PORT CLIP`), where Debian installs the
GStreamer bindings; prints `ready rtsp://127.0.0.1:PORT/cam` once it listens.
"""

from __future__ import annotations

import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> int:
    port, clip = int(sys.argv[1]), sys.argv[2]
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( filesrc location={clip} ! matroskademux ! identity sync=true ! rtpjpegpay name=pay0 pt=26 )"
    )
    factory.set_shared(True)
    server.get_mount_points().add_factory("/cam", factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{port}", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"ready rtsp://127.0.0.1:{port}/cam", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
