"""Model output (Contract 2) as values: per-image `Detections`, class names, and per-frame `Counts`; `maskwatch.model_api`
parses the model's answers into them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

WITH_MASK = "with_mask"
WITHOUT_MASK = "without_mask"
INCORRECT = "mask_worn_incorrectly"
# Contract 2 class ids.
CLASS_NAMES: dict[int, str] = {1: WITH_MASK, 2: WITHOUT_MASK, 3: INCORRECT}
CLASS_IDS: dict[str, int] = {v: k for k, v in CLASS_NAMES.items()}
VIOLATION_CLASSES = frozenset({WITHOUT_MASK, INCORRECT})


class ModelOutputError(ValueError):
    """The model's answer does not follow Contract 2."""


@dataclass(frozen=True)
class Detection:
    """One face: normalised box (ymin, xmin, ymax, xmax), score and class name."""

    box: tuple[float, float, float, float]
    score: float
    label: str
    # the face's score for each class, in Contract 2 id order (1, 2, 3), when the model reports them
    class_scores: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.label not in CLASS_IDS:
            raise ModelOutputError(f"unknown class {self.label!r}")
        if not 0.0 <= self.score <= 1.0 + 1e-6:
            raise ModelOutputError(f"score {self.score} outside [0, 1]")
        if self.class_scores is not None and (
            len(self.class_scores) != len(CLASS_NAMES) or not all(0.0 <= v <= 1.0 + 1e-6 for v in self.class_scores)
        ):
            raise ModelOutputError(f"class scores {self.class_scores} are not {len(CLASS_NAMES)} values in [0, 1]")

    def pixel_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) in pixels, clipped to the image."""
        y0, x0, y1, x1 = self.box
        return (
            max(0, min(width - 1, int(round(x0 * width)))),
            max(0, min(height - 1, int(round(y0 * height)))),
            max(0, min(width - 1, int(round(x1 * width)))),
            max(0, min(height - 1, int(round(y1 * height)))),
        )


# The operating point: detections scoring below this are not counted (worker), drawn (/check) or used for
# recall/confusion (`maskwatch eval`). The served model reports candidates down to its own lower face threshold,
# each scored by how sure it is that it is a face (its class is the most probable one); on the validation split
# this point is on the plateau of best F1 (0.5-0.6; serving/MODEL_CARD.md). MW_MIN_SCORE overrides it.
DEFAULT_MIN_SCORE = 0.5


@dataclass(frozen=True)
class Detections:
    """The faces found in one image."""

    items: tuple[Detection, ...] = ()

    @classmethod
    def empty(cls) -> Detections:
        return cls(())

    def __len__(self) -> int:
        return len(self.items)

    def above(self, min_score: float) -> Detections:
        return Detections(tuple(d for d in self.items if d.score >= min_score))

    def counts(self, image_width: int | None = None) -> Counts:
        """This frame's counts; with the image width, faces are also counted by pixel width (camera QA)."""
        by: dict[str, int] = {WITH_MASK: 0, WITHOUT_MASK: 0, INCORRECT: 0}
        for d in self.items:
            by[d.label] += 1
            if image_width:
                bucket = width_bucket((d.box[3] - d.box[1]) * image_width)
                by[bucket] = by.get(bucket, 0) + 1
        return Counts(frames=1, faces=len(self.items), **by)  # type: ignore[arg-type]


WIDTH_BUCKETS = ((0, 16, "faces_lt16"), (16, 32, "faces_16_32"), (32, 64, "faces_32_64"), (64, 1 << 30, "faces_ge64"))
# Below this the model finds faces about half the time (41-60 % under 16 px, ~94 % at 16-32 px on the validation
# set, serving/MODEL_CARD.md): a camera whose faces are mostly smaller gets the QA warning `faces_too_small`.
SMALL_FACE_PX = 16

COUNT_FIELDS = (
    "frames",
    "faces",
    WITH_MASK,
    WITHOUT_MASK,
    INCORRECT,
    "invalid",
    "dropped_stale",
    # frames the producer sent that never reached a worker (gaps in its mw-seq: a broker that died, retention)
    "lost",
    # unique people (one verdict per track, by vote over its frames)
    "persons",
    "persons_with_mask",
    "persons_without_mask",
    "persons_mask_worn_incorrectly",
    # camera QA: detected faces by width in pixels
    *(name for _, _, name in WIDTH_BUCKETS),
)


def width_bucket(width_px: float) -> str:
    for lo, hi, name in WIDTH_BUCKETS:
        if lo <= width_px < hi:
            return name
    return WIDTH_BUCKETS[-1][2]


@dataclass(frozen=True)
class Counts:
    """Additive per-camera counters (the fields of `mw:totals:{id}`)."""

    frames: int = 0
    faces: int = 0
    with_mask: int = 0
    without_mask: int = 0
    mask_worn_incorrectly: int = 0
    invalid: int = 0
    dropped_stale: int = 0
    lost: int = 0
    persons: int = 0
    persons_with_mask: int = 0
    persons_without_mask: int = 0
    persons_mask_worn_incorrectly: int = 0
    faces_lt16: int = 0
    faces_16_32: int = 0
    faces_32_64: int = 0
    faces_ge64: int = 0

    def __post_init__(self) -> None:
        for name in COUNT_FIELDS:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} < 0")

    def __add__(self, other: Counts) -> Counts:
        return Counts(**{n: getattr(self, n) + getattr(other, n) for n in COUNT_FIELDS})  # type: ignore[arg-type]

    def as_dict(self) -> dict[str, int]:
        return {n: int(getattr(self, n)) for n in COUNT_FIELDS}

    @classmethod
    def from_mapping(cls, m: Mapping[str, object]) -> Counts:
        def num(v: object) -> int:
            if isinstance(v, bytes):
                v = v.decode()
            return int(float(v)) if v not in (None, "") else 0  # type: ignore[arg-type]

        return cls(**{n: num(m.get(n, 0)) for n in COUNT_FIELDS})  # type: ignore[arg-type]

    @property
    def people(self) -> int:
        return self.with_mask + self.without_mask + self.mask_worn_incorrectly

    @property
    def small_face_share(self) -> float | None:
        """Share of detected faces narrower than SMALL_FACE_PX; None when no face was measured."""
        measured = self.faces_lt16 + self.faces_16_32 + self.faces_32_64 + self.faces_ge64
        return self.faces_lt16 / measured if measured else None

    @property
    def compliance(self) -> float | None:
        """with_mask / (with_mask + without_mask + incorrect); None when nobody was seen."""
        p = self.people
        return self.with_mask / p if p else None
