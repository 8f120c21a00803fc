"""The train/validation split and the K folds of cross-validation: by image, near-duplicate images (perceptual hash)
always on the same side, the folds stratified by the rarest class."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from maskwatch.detections import INCORRECT
from training.eval.dataset import Sample

SPLITS = ("train", "val", "all")
DEFAULT_VAL_FRACTION = 0.2
DEFAULT_SEED = 0
HASH_SIDE = 16
# dHash bits (of HASH_SIDE**2 = 256) that may differ between two images still treated as one scene: on the
# face-mask set, frames of one video or one photo shoot differ in up to ~62 bits, unrelated photos in 65 or more.
DEFAULT_MAX_HAMMING = 64
DEFAULT_FOLDS = 5
MAX_FOLDS = 20
# The folds share out this class's faces evenly: the rarest one (81 of 2,770 faces in the public face-mask set).
STRATIFY_CLASS = INCORRECT


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


def _groups_of(samples: Sequence[Sample], max_hamming: int, hashes: Sequence[int] | None) -> list[list[int]]:
    """Duplicate groups as lists of sample indices, ordered independently of the listing (by smallest member name)."""
    if hashes is None:
        hashes = [dhash(_read(s)) for s in samples]
    if len(hashes) != len(samples):
        raise ValueError(f"{len(hashes)} hashes for {len(samples)} samples")
    members: dict[int, list[int]] = {}
    for i, g in enumerate(duplicate_groups(hashes, max_hamming)):
        members.setdefault(g, []).append(i)
    return sorted(members.values(), key=lambda idx: min(samples[i].name for i in idx))


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
    ordered = _groups_of(samples, max_hamming, hashes)
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


@dataclass(frozen=True)
class Folds:
    """The K folds of a data set: `fold[i]` is the fold of `samples[i]`; fold k held out is `part(k)`."""

    samples: tuple[Sample, ...]
    fold: tuple[int, ...]
    k: int
    groups: int

    def part(self, k: int) -> Split:
        """Fold `k` as the validation images, every other fold as the training images (listing order kept)."""
        if not 0 <= k < self.k:
            raise ValueError(f"fold {k} outside 0..{self.k - 1}")
        return Split(
            train=tuple(s for s, f in zip(self.samples, self.fold, strict=True) if f != k),
            val=tuple(s for s, f in zip(self.samples, self.fold, strict=True) if f == k),
            groups=self.groups,
        )

    def faces(self, label: str) -> list[int]:
        """Faces of class `label` per fold."""
        out = [0] * self.k
        for s, f in zip(self.samples, self.fold, strict=True):
            out[f] += s.labels.count(label)
        return out


def folds(
    samples: Sequence[Sample],
    k: int = DEFAULT_FOLDS,
    seed: int = DEFAULT_SEED,
    max_hamming: int = DEFAULT_MAX_HAMMING,
    hashes: Sequence[int] | None = None,
    stratify: str = STRATIFY_CLASS,
) -> Folds:
    """K folds, deterministic for the same images, K and seed: whole duplicate groups go to one fold; the groups with
    faces of class `stratify` first, most such faces first, each to the fold that has the fewest of them so far, then
    the rest, each to the fold with the fewest images (ties: fewer images, then the lower fold; groups of equal
    weight in a seeded random order). So each fold gets its share of the rare class and of the images."""
    if not 2 <= k <= MAX_FOLDS:
        raise ValueError(f"folds {k} outside 2..{MAX_FOLDS}")
    ordered = _groups_of(samples, max_hamming, hashes)
    if k > len(ordered):
        raise ValueError(f"{k} folds for {len(ordered)} groups of distinct images")
    rare = [sum(samples[i].labels.count(stratify) for i in g) for g in ordered]
    shuffled = np.random.default_rng(seed).permutation(len(ordered))
    by_rare = sorted(shuffled.tolist(), key=lambda g: -rare[g])  # stable: the seeded order among equals
    rare_in, images_in = [0] * k, [0] * k
    fold = [0] * len(samples)
    for g in by_rare:
        if rare[g]:
            target = min(range(k), key=lambda f: (rare_in[f], images_in[f], f))
        else:
            target = min(range(k), key=lambda f: (images_in[f], f))
        rare_in[target] += rare[g]
        images_in[target] += len(ordered[g])
        for i in ordered[g]:
            fold[i] = target
    return Folds(samples=tuple(samples), fold=tuple(fold), k=k, groups=len(ordered))


def _read(sample: Sample) -> np.ndarray:
    img = cv2.imread(str(sample.image_path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise ValueError(f"{sample.image_path}: not a decodable image")
    return img
