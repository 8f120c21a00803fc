"""The cameras one producer runs: starts them, stops them, and applies a re-read site file camera by camera."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from maskwatch.site import CameraConfig
from producer.camera import Camera, CameraOptions, CameraState
from producer.metrics import CameraCounters, ProducerMetrics
from producer.publisher import Publisher
from producer.sources import Source

logger = logging.getLogger(__name__)

SourceFactory = Callable[[CameraConfig], Source | None]


@dataclass
class Changes:
    """What applying a site did."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return f"added={len(self.added)} removed={len(self.removed)} changed={len(self.changed)} unchanged={len(self.unchanged)}"


class Supervisor:
    """Cameras by id. A camera keeps its `CameraState` (sequence number, counters) for the whole run, so a
    camera whose settings change, or that is removed and added back, continues its sequence."""

    def __init__(
        self,
        publisher: Publisher,
        producer_id: str,
        options: CameraOptions,
        metrics: ProducerMetrics | None = None,
        on_status: Callable[[Camera, str], None] | None = None,
        source_factory: SourceFactory | None = None,
    ) -> None:
        self.publisher = publisher
        self.producer_id = producer_id
        self.options = options
        self.metrics = metrics
        self.on_status = on_status
        self.source_factory = source_factory
        self.cameras: dict[str, Camera] = {}
        self.states: dict[str, CameraState] = {}
        self._retired: dict[str, dict[str, str | int | float]] = {}
        self.started_any = False

    def _state(self, cid: str) -> CameraState:
        if cid not in self.states:
            counters = self.metrics.camera(cid) if self.metrics else CameraCounters(cid)
            self.states[cid] = CameraState(counters)
        return self.states[cid]

    def _start(self, site: str, cfg: CameraConfig) -> None:
        source = self.source_factory(cfg) if self.source_factory else None
        cam = Camera(
            cfg, site, self.publisher, self._state(cfg.id), self.producer_id, self.options, source, self.on_status
        )
        self.cameras[cfg.id] = cam
        self._retired.pop(cfg.id, None)
        cam.start()
        self.started_any = True
        logger.info(
            "camera started camera=%s source=%s fps=%s policy=%s", cfg.id, cfg.safe_source, cfg.fps, cfg.handoff_policy
        )

    def _stop(self, cams: list[Camera], timeout_s: float, why: str) -> None:
        for cam in cams:
            cam.stop()
        deadline = time.monotonic() + timeout_s
        for cam in cams:
            if not cam.join(max(0.0, deadline - time.monotonic())):
                logger.warning("camera did not stop in time camera=%s timeout_s=%.0f", cam.id, timeout_s)
            cam.mark_stopped(why)

    def apply(self, site: str, configs: list[CameraConfig], join_timeout_s: float = 5.0) -> Changes:
        """Make the running cameras match `configs`; cameras whose config (or site name) is unchanged are not touched."""
        wanted = {c.id: c for c in configs}
        ch = Changes()
        gone = [cam for cid, cam in self.cameras.items() if cid not in wanted]
        differ = [
            cam for cid, cam in self.cameras.items() if cid in wanted and (cam.cam != wanted[cid] or cam.site != site)
        ]
        ch.removed = [c.id for c in gone]
        ch.changed = [c.id for c in differ]
        ch.unchanged = [cid for cid, cam in self.cameras.items() if cid in wanted and cam not in differ]
        ch.added = [cid for cid in wanted if cid not in self.cameras]
        if gone:
            self._stop(gone, join_timeout_s, "removed from the site file")
        if differ:
            self._stop(differ, join_timeout_s, "restarting with new settings")
        for cam in gone:
            self._retired[cam.id] = cam.status_fields()
            del self.cameras[cam.id]
            logger.info("camera removed camera=%s seq=%d", cam.id, cam.state.seq)
        for cam in differ:
            self._start(site, wanted[cam.id])
        for cid in ch.added:
            self._start(site, wanted[cid])
        return ch

    def stop_all(self, timeout_s: float = 5.0) -> None:
        self._stop(list(self.cameras.values()), timeout_s, "producer stopped")

    def status_rows(self) -> dict[str, dict[str, str | int | float]]:
        """Every camera's Redis row, plus the last row of cameras stopped since the previous call."""
        rows = dict(self._retired)
        self._retired.clear()
        rows.update((cid, cam.status_fields()) for cid, cam in self.cameras.items())
        return rows

    def restore_retired(self, rows: dict[str, dict[str, str | int | float]]) -> None:
        """Rows of removed cameras that could not be written (Redis down) are kept for the next attempt."""
        for cid, row in rows.items():
            if cid not in self.cameras:
                self._retired.setdefault(cid, row)

    @property
    def all_done(self) -> bool:
        """Every camera has finished on its own (play-once sources, max_frames)."""
        return self.started_any and bool(self.cameras) and not any(c.alive for c in self.cameras.values())
