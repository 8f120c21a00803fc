"""Cross-validation figures: K fold reports (each the `maskwatch eval` report of one held-out fold, with its
detections) aggregated into mean ± sd per figure across the folds and pooled figures over every held-out image."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maskwatch.detections import WIDTH_BUCKETS
from training.eval import report as files
from training.eval.compliance import GROUP_SIZES
from training.eval.metrics import CLASSES, FACE, Report, evaluate

# (label, path in report.json, unit): the figures given as mean ± sd over the folds
FIGURES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("mAP@0.5, 3 classes, per-class scores", ("mean_ap",), "%"),
    ("mAP@0.5, 3 classes, top class only", ("mean_ap_top_class",), "%"),
    *((f"AP {c}", ("classes", c, "ap"), "%") for c in (*CLASSES, FACE)),
    *((f"recall {c} at the operating point", ("classes", c, "recall"), "%") for c in (FACE, *CLASSES)),
    ("precision, faces at the operating point", ("classes", FACE, "precision"), "%"),
    *(
        (f"recall faces {b.removeprefix('faces_').replace('lt', '< ').replace('ge', '≥ ').replace('_', '-')} px", ("recall_by_width", b, "recall"), "%")
        for _, _, b in WIDTH_BUCKETS
    ),
    ("compliance error, one image: mean abs", ("compliance_error", "per_image", "mean_abs"), "points"),
    ("compliance error, one image: p90 abs", ("compliance_error", "per_image", "p90_abs"), "points"),
    *(
        (f"compliance error, {g} images: {stat}", ("compliance_error", "groups", str(g), key), "points")
        for g in GROUP_SIZES
        for stat, key in (("mean abs", "mean_abs"), ("p90 abs", "p90_abs"), ("mean signed", "mean_signed"))
    ),
    *((f"count bias {c} (counted ÷ true)", ("compliance_error", "count_bias", c), "ratio") for c in CLASSES),
)


@dataclass(frozen=True)
class Spread:
    """One figure over the folds: each fold's value (None where a fold has none), their mean and sample sd."""

    values: tuple[float | None, ...]
    unit: str

    @property
    def mean(self) -> float | None:
        known = [v for v in self.values if v is not None]
        return float(np.mean(known)) if known else None

    @property
    def sd(self) -> float | None:
        known = [v for v in self.values if v is not None]
        return float(np.std(known, ddof=1)) if len(known) >= 2 else None

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "sd": self.sd, "folds": list(self.values), "unit": self.unit}


def _at(d: Any, path: Sequence[str]) -> float | None:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return float(d) if isinstance(d, int | float) and not isinstance(d, bool) else None


def spreads(reports: Sequence[dict[str, Any]]) -> dict[str, Spread]:
    """Every figure of FIGURES over the fold reports (report.json contents), in FIGURES order."""
    return {label: Spread(tuple(_at(r, path) for r in reports), unit) for label, path, unit in FIGURES}


@dataclass(frozen=True)
class CrossValidation:
    """K held-out folds: their reports, the spread of each figure, and the figures over every held-out image."""

    folds: tuple[str, ...]  # the fold report directories
    reports: tuple[dict[str, Any], ...]
    spreads: dict[str, Spread]
    pooled: Report
    images: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "cross_validation": {
                "folds": len(self.folds),
                "fold_reports": list(self.folds),
                "images": self.images,
                "mean_sd": {label: s.to_dict() for label, s in self.spreads.items()},
            },
            "pooled": self.pooled.to_dict(),
        }


def load_fold(fold_dir: Path) -> tuple[dict[str, Any], files.ImageDetections]:
    """A fold's report.json and detections.json; ValueError naming the directory when either is missing or bad."""
    try:
        saved = json.loads((fold_dir / files.JSON_FILE).read_text(encoding="utf-8"))
        detections = files.ImageDetections.from_json((fold_dir / files.DETECTIONS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{fold_dir}: not a fold report with its detections ({exc})") from exc
    return saved, detections


def aggregate(fold_dirs: Sequence[Path], bootstrap: int = 0) -> CrossValidation:
    """The folds' figures as mean ± sd, and every held-out image's detections pooled into one report (AP over all
    of them ranked together, with `bootstrap` resamples for its interval). ValueError when the folds were measured
    at different operating points or IoU, or share an image (then they are not folds of one data set)."""
    if len(fold_dirs) < 2:
        raise ValueError(f"{len(fold_dirs)} fold report(s): cross-validation needs at least 2")
    loaded = [load_fold(d) for d in fold_dirs]
    reports = [r for r, _ in loaded]
    for key in ("min_score", "iou_threshold"):
        values = {r.get(key) for r in reports}
        if len(values) > 1:
            raise ValueError(f"the fold reports differ in {key}: {sorted(map(str, values))}")
    seen: dict[str, Path] = {}
    for d, (_, detections) in zip(fold_dirs, loaded, strict=True):
        for name in detections.names:
            if name in seen:
                raise ValueError(f"image {name} is in {seen[name]} and {d}: not folds of one data set")
            seen[name] = d
    pooled = files.ImageDetections.concat([det for _, det in loaded])
    report = evaluate(
        pooled.truths, pooled.preds, float(reports[0]["iou_threshold"]), float(reports[0]["min_score"]), bootstrap
    )
    return CrossValidation(tuple(str(d) for d in fold_dirs), tuple(reports), spreads(reports), report, len(pooled.names))


def _fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "–"
    return f"{100 * v:.1f}" if unit == "%" else f"{v:.2f}" if unit == "ratio" else f"{v:.1f}"


def markdown(cv: CrossValidation, meta: dict[str, Any]) -> str:
    """Mean ± sd per figure with each fold's value, then the pooled report's tables."""
    k = len(cv.folds)
    lines = [
        f"# Cross-validation: `{meta.get('model', '?')}`",
        "",
        f"{k} folds of `{meta.get('data', '?')}`, {cv.images} images: {meta.get('how', 'each fold measured on its own')}. "
        "Mean ± sd (sample sd) over the folds; percent, or percentage points for the compliance error.",
        "",
        "| figure | mean ± sd | " + " | ".join(f"fold {i + 1}" for i in range(k)) + " |",
        "|---|---:|" + "---:|" * k,
    ]
    for label, s in cv.spreads.items():
        sd = "" if s.sd is None else f" ± {_fmt(s.sd, s.unit)}"
        lines.append(f"| {label} | {_fmt(s.mean, s.unit)}{sd} | " + " | ".join(_fmt(v, s.unit) for v in s.values) + " |")
    pooled = files.markdown(cv.pooled, {**meta, "split": f"all {k} held-out folds, pooled"})
    pooled = pooled.replace("# Validation report:", "## Pooled over the folds:", 1).replace("\n## ", "\n### ")
    return "\n".join(lines) + "\n\n" + pooled


def write(cv: CrossValidation, meta: dict[str, Any], out: Path) -> dict[str, Path]:
    """report.json, report.md and pr.png (pooled curves) of the cross-validation in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / files.JSON_FILE, "markdown": out / files.MARKDOWN_FILE, "plot": out / files.PLOT_FILE}
    paths["markdown"].write_text(markdown(cv, meta), encoding="utf-8")
    files.plot(cv.pooled, paths["plot"], f"{len(cv.folds)} folds pooled, precision–recall, IoU {cv.pooled.iou_threshold}")
    paths["json"].write_text(json.dumps(files.rounded({**meta, **cv.to_dict()}), indent=2) + "\n", encoding="utf-8")
    return paths
