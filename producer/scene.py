"""The synthetic demo scene: portraits from photographs that ship inside installed packages, some with a mask drawn on."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from maskwatch.site import SCENES  # noqa: F401 - re-exported for the scene's users

WALL, FLOOR = (70, 78, 84), (50, 55, 60)  # BGR


@dataclass(frozen=True)
class Portrait:
    """A photograph and where the face is in it (x0, y0, x1, y1 pixels)."""

    name: str
    image: np.ndarray
    face: tuple[int, int, int, int]


@functools.cache
def portraits() -> tuple[Portrait, ...]:
    """Real photographs: scikit-image's astronaut and matplotlib's Grace Hopper sample (both public domain)."""
    import skimage.data

    # the astronaut's upper body only: the full photograph's hair and flag draw false faces from the detector
    astro = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)[20:340, 90:370]
    out = [Portrait("astronaut", np.ascontiguousarray(astro), (179 - 90, 57 - 20, 271 - 90, 177 - 20))]
    try:
        import matplotlib.cbook

        path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise OSError(f"cannot read {path}")
        out.append(Portrait("grace_hopper", img, (182, 122, 349, 330)))
    except (ImportError, OSError):
        flipped = cv2.flip(out[0].image, 1)
        w = flipped.shape[1]
        x0, y0, x1, y1 = out[0].face
        out.append(Portrait("astronaut_mirror", flipped, (w - x1, y0, w - x0, y1)))
    return tuple(out)


def draw_mask(img: np.ndarray, face: tuple[int, int, int, int], colour: tuple[int, int, int] = (235, 206, 160)) -> None:
    """Draw a surgical mask over the nose, mouth and chin of the face box, in place."""
    x0, y0, x1, y1 = face
    w, h = x1 - x0, y1 - y0
    top = y0 + int(0.42 * h)
    pts = np.array(
        [
            (x0 + int(0.02 * w), top + int(0.05 * h)),
            (x0 + int(0.5 * w), top - int(0.04 * h)),
            (x1 - int(0.02 * w), top + int(0.05 * h)),
            (x1 - int(0.08 * w), y1 - int(0.02 * h)),
            (x0 + int(0.5 * w), y1 + int(0.06 * h)),
            (x0 + int(0.08 * w), y1 - int(0.02 * h)),
        ],
        np.int32,
    )
    cv2.fillPoly(img, [pts], colour, lineType=cv2.LINE_AA)
    shade = tuple(int(c * 0.8) for c in colour)
    for k in (1, 2, 3):
        y = top + int(k * 0.11 * h)
        cv2.line(img, (x0 + int(0.1 * w), y), (x1 - int(0.1 * w), y), shade, max(1, w // 60), cv2.LINE_AA)
    cv2.line(img, (x0 + int(0.02 * w), top + int(0.05 * h)), (x0 - int(0.05 * w), y0 + int(0.40 * h)), (250, 250, 250), max(1, w // 40))
    cv2.line(img, (x1 - int(0.02 * w), top + int(0.05 * h)), (x1 + int(0.05 * w), y0 + int(0.40 * h)), (250, 250, 250), max(1, w // 40))


@functools.cache
def tile(index: int, masked: bool, height: int) -> np.ndarray:
    """Portrait `index` (cycling through them) scaled to `height` pixels, with a mask drawn on when `masked`;
    cached and shared: copy it, never draw on it."""
    p = portraits()[index % len(portraits())]
    img = p.image.copy()
    if masked:
        draw_mask(img, p.face)
    scale = height / img.shape[0]
    return cv2.resize(img, (max(1, int(img.shape[1] * scale)), height), interpolation=cv2.INTER_AREA)


def backdrop(width: int, height: int) -> np.ndarray:
    """The empty scene: a wall, and the floor across its lowest 18 %."""
    frame = np.empty((height, width, 3), np.uint8)
    frame[:] = WALL
    cv2.rectangle(frame, (0, int(height * 0.82)), (width, height), FLOOR, -1)
    return frame


def masks_for(scene: str) -> tuple[bool, bool]:
    if scene not in SCENES:
        raise ValueError(f"unknown scene {scene!r}; choose one of {', '.join(SCENES)}")
    return {"mixed": (True, False), "masked": (True, True), "bare": (False, False)}[scene]


def compose(scene: str, t: float, width: int = 640, height: int = 480) -> np.ndarray:
    """One frame of `scene` at time `t` seconds: two people drifting slowly in front of a wall."""
    masks = masks_for(scene)
    frame = backdrop(width, height)
    tile_h = int(height * 0.78)
    for i, masked in enumerate(masks):
        person = tile(i, masked, tile_h)
        th, tw = person.shape[:2]
        slot = width // 2
        dx = int(12 * math.sin(t * 0.7 + i * 2.1))
        dy = int(6 * math.sin(t * 1.1 + i))
        x = max(0, min(width - tw, i * slot + (slot - tw) // 2 + dx))
        y = max(0, min(height - th, int(height * 0.06) + dy))
        frame[y : y + th, x : x + tw] = person[: height - y, : width - x]
    return frame
