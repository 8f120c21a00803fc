"""Tiny PASCAL VOC data sets written by tests: images with coloured blobs for faces, annotation XML beside them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

Box = tuple[float, float, float, float]


def write_voc(
    root: Path,
    images: Sequence[tuple[str, tuple[int, int], Sequence[tuple[str, Box]]]],
    seed: int = 0,
    difficult: Sequence[tuple[str, int]] = (),
) -> Path:
    """`root/annotations/<name>.xml` + `root/images/<name>.jpg` per (name, (width, height), [(label, box)]).

    Each image is its own random texture (so no two are perceptual duplicates) with a filled ellipse per box.
    """
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    hard = set(difficult)
    for name, (w, h), objects in images:
        img = cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
        parts = []
        for k, (label, (x0, y0, x1, y1)) in enumerate(objects):
            centre = (int((x0 + x1) / 2), int((y0 + y1) / 2))
            axes = (max(1, int((x1 - x0) / 2)), max(1, int((y1 - y0) / 2)))
            cv2.ellipse(img, centre, axes, 0, 0, 360, (90, 140, 200), -1)
            parts.append(
                f"<object><name>{label}</name><difficult>{int((name, k) in hard)}</difficult>"
                f"<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
            )
        cv2.imwrite(str(root / "images" / f"{name}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
        (root / "annotations" / f"{name}.xml").write_text(
            f"<annotation><folder>images</folder><filename>{name}.jpg</filename>"
            f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>{''.join(parts)}</annotation>",
            encoding="utf-8",
        )
    return root
