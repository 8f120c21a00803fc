"""The train/validation split: by image, near-duplicate images (perceptual hash) always on the same side."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from maskwatch.eval.dataset import Sample

SPLITS = ("train", "val", "all")
DEFAULT_VAL_FRACTION = 0.2
DEFAULT_SEED = 0
HASH_SIDE = 16
# dHash bits (of HASH_SIDE**2 = 256) that may differ between two images still treated as one scene: on the
# face-mask set, frames of one video or one photo shoot differ in up to ~62 bits, unrelated photos in 65 or more.
DEFAULT_MAX_HAMMING = 64


def dhash(image: np.ndarray, side: int = HASH_SIDE) -> int:
    """Difference hash of side*side bits: grey (side+1)xside thumbnail, one bit per horizontal pair (left brighter)."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    small = cv2.resize(grey, (side + 1, side), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = (small[:, :-1] > small[:, 1:]).reshape(-1)
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def duplicate_groups(hashes: Sequence[int], max_hamming: int = DEFAULT_MAX_HAMMING) -> list[int]:
    """Group id per image: images whose hashes differ in at most `max_hamming` bits, transitively, share one."""
    parent = list(range(len(hashes)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(hashes)):
        for j in range(i + 1, len(hashes)):
            if hamming(hashes[i], hashes[j]) <= max_hamming:
                parent[root(j)] = root(i)
    return [root(i) for i in range(len(hashes))]


@dataclass(frozen=True)
class Split:
    train: tuple[Sample, ...]
    val: tuple[Sample, ...]
    groups: int

    def part(self, name: str) -> tuple[Sample, ...]:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
        if name == "all":
            return tuple(sorted(self.train + self.val, key=lambda s: s.name))
        return self.train if name == "train" else self.val


def split(
    samples: Sequence[Sample],
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = DEFAULT_SEED,
    max_hamming: int = DEFAULT_MAX_HAMMING,
    hashes: Sequence[int] | None = None,
) -> Split:
    """Deterministic for the same images, fraction and seed: whole duplicate groups go to validation, in a seeded
    random order, until at least `val_fraction` of the images are there. Images keep the order of `samples`."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction {val_fraction} outside (0, 1)")
    if hashes is None:
        hashes = [dhash(_read(s)) for s in samples]
    groups = duplicate_groups(hashes, max_hamming)
    members: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    # group order independent of listing order: by the smallest member name
    ordered = sorted(members.values(), key=lambda idx: min(samples[i].name for i in idx))
    rng = np.random.default_rng(seed)
    val: set[int] = set()
    for k in rng.permutation(len(ordered)):
        if len(val) >= val_fraction * len(samples):
            break
        val.update(ordered[k])
    return Split(
        train=tuple(s for i, s in enumerate(samples) if i not in val),
        val=tuple(s for i, s in enumerate(samples) if i in val),
        groups=len(ordered),
    )


def _read(sample: Sample) -> np.ndarray:
    img = cv2.imread(str(sample.image_path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise ValueError(f"{sample.image_path}: not a decodable image")
    return img
