"""The eval report as files: `report.json`, `report.md` (tables) and `pr.png` (precision-recall curves)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from maskwatch.eval.metrics import CLASSES, FACE, FALSE_POSITIVE, MEAN_AP, MISSED, Report

JSON_FILE, MARKDOWN_FILE, PLOT_FILE = "report.json", "report.md", "pr.png"


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def _ap(report: Report, name: str, ap: float | None) -> str:
    """An AP with its bootstrap interval when there is one: `87.3 (84.0–90.1)`."""
    interval = report.intervals.get(name)
    if ap is None or interval is None:
        return _pct(ap)
    return f"{_pct(ap)} ({_pct(interval[0])}–{_pct(interval[1])})"


def _rounded(obj: Any) -> Any:
    if isinstance(obj, float):
        return round(obj, 4)
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_rounded(v) for v in obj]
    return obj


def as_dict(report: Report, meta: dict[str, Any]) -> dict[str, Any]:
    return _rounded({**meta, **report.to_dict()})


def markdown(report: Report, meta: dict[str, Any]) -> str:
    """Tables a person reads: AP per class, recall by face width, confusion, speed."""
    lines = [
        f"# Validation report: `{meta.get('model', '?')}`",
        "",
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
    timing = meta.get("timing", {})
    if timing:
        lines += ["", "## Speed", "", "| run | frames | frames/s | CPU s/frame |", "|---|---:|---:|---:|"]
        for name, t in timing.items():
            cpu = t.get("cpu_seconds_per_frame")
            lines.append(f"| {name} | {t['frames']} | {t['fps']:.1f} | {'–' if cpu is None else f'{cpu:.3f}'} |")
        if meta.get("threads"):
            lines.append(f"\nIn-process TensorFlow limited to {meta['threads']} threads; wall-clock on a shared machine.")
    return "\n".join(lines) + "\n"


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


def write(report: Report, meta: dict[str, Any], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / JSON_FILE, "markdown": out / MARKDOWN_FILE, "plot": out / PLOT_FILE}
    paths["json"].write_text(json.dumps(as_dict(report, meta), indent=2) + "\n", encoding="utf-8")
    paths["markdown"].write_text(markdown(report, meta), encoding="utf-8")
    plot(report, paths["plot"], f"{meta.get('split', '')} precision–recall, IoU {report.iou_threshold}")
    return paths
