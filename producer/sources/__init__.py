"""Camera sources behind one protocol (`base.Source`); `make_source` picks the module for a site file's `source`."""

from __future__ import annotations

from maskwatch.site import CameraConfig, parse_synthetic
from producer.sources.base import Captured, Source, SourceEnded, SourceError

__all__ = ["Captured", "Source", "SourceEnded", "SourceError", "make_source"]


def make_source(cam: CameraConfig) -> Source:
    kind = cam.kind
    if kind == "synthetic":
        from producer.sources.synthetic import SyntheticSource

        return SyntheticSource(*parse_synthetic(cam.source))
    if kind == "folder":
        from producer.sources.folder import FolderSource

        return FolderSource(cam.source, cam.loop)
    if kind == "file":
        from producer.sources.video_file import VideoFileSource

        return VideoFileSource(cam.source, cam.loop)
    if kind == "webcam":
        from producer.sources.ffmpeg import WebcamSource

        return WebcamSource(int(cam.source.partition(":")[2]), cam.fps, cam.open_timeout_s, cam.read_timeout_s)
    if kind == "rtsp":
        from producer.sources.ffmpeg import StreamSource

        return StreamSource(cam.source, cam.fps, cam.open_timeout_s, cam.read_timeout_s)
    from producer.sources.http import HttpSource

    url = cam.source.removeprefix("mjpeg+")
    return HttpSource(url, cam.fps, cam.open_timeout_s, cam.read_timeout_s, force_mjpeg=kind == "mjpeg")
