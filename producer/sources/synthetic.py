"""The synthetic demo camera (`synthetic:<scene>[@WxH]`): a scene composed at read time from real photographs."""

from __future__ import annotations

from producer.scene import compose
from producer.sources.base import Captured, now_ms


class SyntheticSource:
    """Frames composed on demand; never fails, never ends."""

    live = False

    def __init__(self, scene: str, width: int = 640, height: int = 480) -> None:
        self.scene = scene
        self.width = width
        self.height = height

    def open(self) -> None:
        compose(self.scene, 0.0, self.width, self.height)  # validates the scene and warms the tile cache

    def read(self, t: float) -> Captured:
        return Captured(now_ms(), image=compose(self.scene, t, self.width, self.height))

    def close(self) -> None:
        return None

    def interrupt(self) -> None:
        return None  # reads never block
