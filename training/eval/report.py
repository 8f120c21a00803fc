"""The eval report as files: `report.json`, `report.md` (tables), `pr.png` (precision-recall curves) and
`detections.json` (each image's truth and detections, so that reports of several folds can be pooled)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.eval.compliance import MIN_FACES_PER_IMAGE, ComplianceError
from training.eval.metrics import CLASSES, FACE, FALSE_POSITIVE, MEAN_AP, MISSED, Predicted, Report, Truth

JSON_FILE, MARKDOWN_FILE, PLOT_FILE, DETECTIONS_FILE = "report.json", "report.md", "pr.png", "detections.json"


@dataclass(frozen=True)
class ImageDetections:
    """Per image of an evaluated set, in one order: its name, its truth and the model's detections."""

    names: tuple[str, ...]
    truths: tuple[Truth, ...]
    preds: tuple[Predicted, ...]

    def __post_init__(self) -> None:
        if not len(self.names) == len(self.truths) == len(self.preds):
            raise ValueError(f"{len(self.names)} names, {len(self.truths)} truths, {len(self.preds)} predictions")

    def to_json(self) -> str:
        def rows(a: object) -> Any:
            return np.round(np.asarray(a, np.float64), 6).tolist()

        images = [
            {
                "image": name,
                "truth": {"boxes": rows(t.boxes), "labels": list(t.labels), "difficult": list(t.difficult)},
                "predicted": {
                    "boxes": rows(p.boxes),
                    "scores": rows(p.scores),
                    "labels": list(p.labels),
                    "class_scores": None if p.class_scores is None else rows(p.class_scores),
                },
            }
            for name, t, p in zip(self.names, self.truths, self.preds, strict=True)
        ]
        return json.dumps({"images": images}) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ImageDetections:
        """ValueError (naming the image) when an entry is malformed."""
        names, truths, preds = [], [], []
        for entry in json.loads(text)["images"]:
            try:
                t, p = entry["truth"], entry["predicted"]
                truths.append(
                    Truth(np.asarray(t["boxes"], np.float64).reshape(-1, 4), tuple(t["labels"]), tuple(t["difficult"]))
                )
                scores = p["class_scores"]
                preds.append(
                    Predicted(
                        np.asarray(p["boxes"], np.float64).reshape(-1, 4),
                        np.asarray(p["scores"], np.float64),
                        tuple(p["labels"]),
                        None if scores is None else np.asarray(scores, np.float64).reshape(-1, len(CLASSES)),
                    )
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"image {entry.get('image', '?')}: {exc}") from exc
            names.append(str(entry["image"]))
        return cls(tuple(names), tuple(truths), tuple(preds))

    @classmethod
    def concat(cls, parts: Sequence[ImageDetections]) -> ImageDetections:
        return cls(
            tuple(n for p in parts for n in p.names),
            tuple(t for p in parts for t in p.truths),
            tuple(q for p in parts for q in p.preds),
        )


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def _ap(report: Report, name: str, ap: float | None) -> str:
    """An AP with its bootstrap interval when there is one: `87.3 (84.0–90.1)`."""
    interval = report.intervals.get(name)
    if ap is None or interval is None:
        return _pct(ap)
    return f"{_pct(ap)} ({_pct(interval[0])}–{_pct(interval[1])})"


def rounded(obj: Any) -> Any:
    """Floats to 4 decimals in nested dicts and lists: the JSON a person reads."""
    if isinstance(obj, float):
        return round(obj, 4)
    if isinstance(obj, dict):
        return {k: rounded(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [rounded(v) for v in obj]
    return obj


def as_dict(report: Report, meta: dict[str, Any]) -> dict[str, Any]:
    return rounded({**meta, **report.to_dict()})


def markdown(report: Report, meta: dict[str, Any]) -> str:
    """Tables a person reads: AP per class, recall by face width, confusion, speed."""
    lines = [
        f"# Validation report: `{meta.get('model', '?')}`",
        "",
        *([str(meta["note"]), ""] if meta.get("note") else []),
        f"Data `{meta.get('data', '?')}`, split `{meta.get('split', '?')}`: {report.images} images, "
        f"{report.classes[FACE].positives} faces. AP at IoU {report.iou_threshold} (VOC all-point interpolation) "
        f"over every detection; recall, precision, widths and confusion over detections scoring ≥ {report.min_score}."
        + (
            f" In brackets: the 95 % interval of an AP over {report.resamples} bootstrap resamples of the images."
            if report.intervals
            else ""
        ),
        "",
        (
            "AP ranks every face found in each class's list by its score for that class (the VOC protocol); "
            "AP top class counts each face in its top class's list only, as the worker counts it."
            if report.per_class_scores
            else "The model reports no per-class scores: each face is in its top class's list only."
        ),
        "",
        "| class | AP@0.5 % | AP top class % | faces | detections | recall % | precision % |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in (*CLASSES, FACE):
        c = report.classes[name]
        label = f"{name} (any class)" if name == FACE else name
        lines.append(
            f"| {label} | {_ap(report, name, c.ap)} | {_pct(c.ap_top_class)} | {c.positives} | {c.detections} "
            f"| {_pct(c.recall)} | {_pct(c.precision)} |"
        )
    lines += [
        "",
        f"**mAP@0.5 (3 classes): {_ap(report, MEAN_AP, report.mean_ap)} %** "
        f"(top class only: {_pct(report.mean_ap_top_class)} %)",
        "",
    ]
    lines += ["## Recall by face width (any class)", "", "| face width px | faces | found | recall % |", "|---|---:|---:|---:|"]
    for bucket, row in report.recall_by_width.items():
        label = bucket.removeprefix("faces_").replace("lt", "< ").replace("ge", "≥ ").replace("_", "–")
        recall = row["recall"]
        lines.append(f"| {label} | {row['faces']} | {row['found']} | {_pct(recall if isinstance(recall, float) else None)} |")
    lines += ["", "## Confusion of faces (rows: truth; columns: prediction)", ""]
    lines += ["| | " + " | ".join((*CLASSES, MISSED)) + " |", "|---" * (len(CLASSES) + 2) + "|"]
    for true_name in (*CLASSES, FALSE_POSITIVE):
        counts = report.confusion[true_name]
        lines.append(f"| {true_name} | " + " | ".join(str(counts.get(c, "–")) for c in (*CLASSES, MISSED)) + " |")
    if report.compliance is not None:
        lines += ["", *compliance_lines(report.compliance)]
    timing = meta.get("timing", {})
    if timing:
        lines += ["", "## Speed", "", "| run | frames | frames/s | CPU s/frame |", "|---|---:|---:|---:|"]
        for name, t in timing.items():
            cpu = t.get("cpu_seconds_per_frame")
            lines.append(f"| {name} | {t['frames']} | {t['fps']:.1f} | {'–' if cpu is None else f'{cpu:.3f}'} |")
        if meta.get("threads"):
            lines.append(f"\nIn-process TensorFlow limited to {meta['threads']} threads; wall-clock on a shared machine.")
    return "\n".join(lines) + "\n"


def _points(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f}"


def compliance_lines(c: ComplianceError) -> list[str]:
    """The operator's compliance error: a table over one image and random groups, and the count bias per class."""
    lines = [
        f"## Compliance error at the operating point (score ≥ {c.min_score:g})",
        "",
        "What an operator reads: the share of faces counted that wear a mask, with_mask / (with_mask + without_mask "
        "+ worn incorrectly), against the annotated share; in percentage points. Signed: model minus truth "
        "(negative: the site looks less compliant than it is). "
        f"Groups: {c.draws} random draws of distinct images each (seed {c.seed}).",
        "",
        "| over | measured | mean abs | median abs | p90 abs | mean signed | no face counted |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    rows = [(f"one image (≥ {MIN_FACES_PER_IMAGE} true faces)", c.per_image)]
    rows += [(f"{size} random images", stats) for size, stats in c.groups.items()]
    for name, e in rows:
        lines.append(
            f"| {name} | {e.measured} | {_points(e.mean_abs)} | {_points(e.median_abs)} | {_points(e.p90_abs)} "
            f"| {_points(e.mean_signed)} | {e.no_estimate} |"
        )
    bias = c.count_bias
    lines += [
        "",
        "Count bias (faces counted ÷ true faces, each face in its top class): "
        + ", ".join(
            f"{name} {'–' if bias[name] is None else f'{bias[name]:.2f}'} ({c.counted_faces[name]} / {c.true_faces[name]})"
            for name in CLASSES
        )
        + ".",
    ]
    return lines


def plot(report: Report, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5), dpi=100)
    for name in (*CLASSES, FACE):
        recall, precision = report.curves[name]
        ap = report.classes[name].ap
        if ap is None:
            continue
        ax.plot(
            np.concatenate([[0.0], recall]),
            np.concatenate([[1.0], precision]),
            linestyle="--" if name == FACE else "-",
            label=f"{name} AP {100 * ap:.1f}",
        )
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write(
    report: Report, meta: dict[str, Any], out: Path, detections: ImageDetections | None = None
) -> dict[str, Path]:
    """The report's files in `out`; with `detections`, `detections.json` too (what pooling reads)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / JSON_FILE, "markdown": out / MARKDOWN_FILE, "plot": out / PLOT_FILE}
    if detections is not None:
        paths["detections"] = out / DETECTIONS_FILE
        paths["detections"].write_text(detections.to_json(), encoding="utf-8")
    paths["markdown"].write_text(markdown(report, meta), encoding="utf-8")
    plot(report, paths["plot"], f"{meta.get('split', '')} precision–recall, IoU {report.iou_threshold}")
    paths["json"].write_text(json.dumps(as_dict(report, meta), indent=2) + "\n", encoding="utf-8")  # last: complete
    return paths
