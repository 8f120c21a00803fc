"""Per-class operating points: how they recount a model's rows, the fit that lowers the compliance error, and its
measure by nested cross-validation (each fold counted with points fitted on the others only)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.eval import crossval, operating, report
from training.eval.cli import eval_main
from training.eval.metrics import CLASSES, Predicted, Truth, evaluate
from training.eval.operating import OperatingPoints

pytestmark = pytest.mark.timeout(120)

WM, WO, WI = CLASSES
SMALL_GRID = {"min_scores": (0.3, 0.5, 0.7), "weights": (1.0, 3.0)}


def _pred(scores: list[float], probs: list[list[float]]) -> Predicted:
    s, p = np.array(scores), np.array(probs)
    boxes = np.array([[10.0 * i, 0.0, 10.0 * i + 8, 8.0] for i in range(len(s))]).reshape(-1, 4)
    return Predicted(boxes, s, tuple(CLASSES[i] for i in np.argmax(p, axis=1)), s[:, None] * p)


def test_identity_points_leave_the_rows_as_they_are() -> None:
    p = _pred([0.9, 0.45, 0.2], [[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.5, 0.1, 0.4]])
    q = OperatingPoints().apply(p)
    assert OperatingPoints().is_identity and q.labels == p.labels
    assert np.allclose(q.scores, p.scores) and np.array_equal(q.class_scores, p.class_scores)


def test_a_class_min_score_lands_on_the_operating_point_and_weights_move_the_top_class() -> None:
    p = _pred([0.4, 0.4, 0.8, 0.6], [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.9, 0.05, 0.05], [0.6, 0.1, 0.3]])
    q = OperatingPoints((0.5, 0.4, 0.5), (1.0, 1.0, 2.5)).apply(p)
    # the bare face at 0.4 reaches 0.5 (counted), the masked one at 0.4 stays under; 0.8 masked is unchanged
    assert q.scores[1] == pytest.approx(0.5) and q.scores[0] == pytest.approx(0.4) and q.scores[2] == pytest.approx(0.8)
    assert q.labels == (WM, WO, WM, WI)  # 0.3 x 2.5 beats 0.6: counted as worn incorrectly
    mapped = OperatingPoints((0.3, 0.3, 0.3)).apply(_pred([0.0, 0.15, 0.3, 1.0], [[1, 0, 0]] * 4)).scores
    assert np.allclose(mapped, [0.0, 0.25, 0.5, 1.0])  # monotone: 0 -> 0, min score -> 0.5, 1 -> 1


def _biased_images(n: int, seed: int) -> tuple[list[Truth], list[Predicted]]:
    """Images of 2 masked + 2 bare faces (some 3 + 1) that a model finds all of, but whose bare faces score 0.4:
    at 0.5 the site looks fully compliant."""
    rng = np.random.default_rng(seed)
    truths, preds = [], []
    for _ in range(n):
        bare = int(rng.integers(1, 3))
        labels = (WM,) * (4 - bare) + (WO,) * bare
        truths.append(Truth(np.array([[10.0 * i, 0.0, 10.0 * i + 8, 8.0] for i in range(4)]), labels))
        preds.append(_pred([0.8] * (4 - bare) + [0.4] * bare, [[0.9, 0.05, 0.05]] * (4 - bare) + [[0.05, 0.9, 0.05]] * bare))
    return truths, preds


def test_the_fit_removes_a_count_bias_the_single_operating_point_has() -> None:
    truths, preds = _biased_images(40, 1)
    points = operating.fit(truths, preds, **SMALL_GRID, draws=200)
    assert points.min_scores[1] <= 0.4 and points.min_scores[0] == 0.5  # the bare faces' class is counted from lower
    assert points.class_weights == (1.0, 1.0, 1.0)  # the tie goes to the points nearest the single operating point
    before = evaluate(truths, preds, min_score=0.5).compliance
    after = evaluate(truths, [points.apply(p) for p in preds], min_score=0.5).compliance
    assert before is not None and after is not None
    assert before.groups[20].mean_abs is not None and before.groups[20].mean_abs > 30
    assert after.groups[20].mean_abs == pytest.approx(0.0) and after.count_bias[WO] == pytest.approx(1.0)


def test_nested_cross_validation_fits_each_fold_on_the_others_only(tmp_path: Path) -> None:
    folds = [_biased_images(25, seed) for seed in (2, 3, 4)]
    fit = operating.nested(folds, 0.5, **SMALL_GRID, draws=200)
    assert len(fit.per_fold) == 3 and all(p.min_scores[1] <= 0.4 for p in fit.per_fold)
    label = "compliance error, 20 images: mean abs"
    served, fitted = crossval.spreads(fit.served)[label], crossval.spreads(fit.fitted)[label]
    assert served.mean is not None and fitted.mean is not None and fitted.mean < served.mean / 10
    # a fold whose bare faces score differently from the others' is counted with the others' points, not its own
    odd = _biased_images(25, 5)
    odd_preds = [Predicted(p.boxes, np.where(p.scores < 0.5, 0.2, p.scores), p.labels, p.class_scores) for p in odd[1]]
    fit = operating.nested([*folds, (odd[0], odd_preds)], 0.5, **SMALL_GRID, draws=200)
    assert fit.per_fold[3].min_scores[1] == 0.3  # fitted on the three folds whose bare faces score 0.4
    assert crossval.spreads(fit.fitted)[label].values[3] > 30  # so on the odd fold it still misses its bare faces


def test_aggregate_writes_the_operating_points_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dirs = []
    for k, seed in enumerate((6, 7)):
        truths, preds = _biased_images(20, seed)
        names = tuple(f"f{k}-{i}" for i in range(len(truths)))
        d = tmp_path / f"fold-{k + 1}"
        report.write(evaluate(truths, preds, min_score=0.5), {"model": "m", "data": "voc"}, d, report.ImageDetections(names, tuple(truths), tuple(preds)))
        dirs.append(d)
    out = tmp_path / "cv"
    assert eval_main(["--aggregate", *map(str, dirs), "--out", str(out), "--bootstrap", "0", "--operating-points"]) == 0
    saved = json.loads((out / crossval.OPERATING_FILES[0]).read_text())
    assert len(saved["per_fold"]) == 2 and saved["overall"]["min_scores"][WO] <= 0.4
    row = saved["figures"]["compliance error, 20 images: mean abs"]
    assert row["served"]["mean"] > 30 and row["per_class_points"]["mean"] < 1
    assert "| **fitted on every fold** |" in (out / crossval.OPERATING_FILES[1]).read_text()
    with pytest.raises(SystemExit):
        eval_main(["--data", str(tmp_path), "--operating-points"])
    assert "only with --aggregate" in capsys.readouterr().err
