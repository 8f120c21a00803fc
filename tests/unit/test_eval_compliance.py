"""The operator's compliance error against hand-computed answers: per image, over random groups, the count bias."""

from __future__ import annotations

import numpy as np
import pytest

from training.eval.compliance import MIN_FACES_PER_IMAGE, class_counts, compliance_error
from training.eval.metrics import Predicted, Truth, evaluate
from training.eval.report import markdown

pytestmark = pytest.mark.timeout(30)

WM, WO, INC = "with_mask", "without_mask", "mask_worn_incorrectly"
BOX = [0.0, 0.0, 10.0, 10.0]  # boxes play no part in counting: every face sits on the same spot


def _t(*labels: str) -> Truth:
    return Truth(np.array([BOX] * len(labels), float).reshape(-1, 4), labels)


def _p(*rows: tuple[str, float]) -> Predicted:
    if not rows:
        return Predicted.empty()
    return Predicted(np.array([BOX] * len(rows), float), np.array([s for _, s in rows]), tuple(lb for lb, _ in rows))


# image 0: 3 masked + 1 bare = 75 %; the model counts 2 masked + 1 bare (a masked face at 0.3 is not counted): 66.7 %
# image 1: 5 masked = 100 %; the model counts 4 masked + 1 worn incorrectly: 80 %
# image 2: 2 faces: too few for the per-image figure, but in every group it falls in
# image 3: 4 faces, the model counts none: no compliance shown for it
# image 4: no face, the model counts a false bare face
TRUTHS = [_t(WM, WM, WM, WO), _t(WM, WM, WM, WM, WM), _t(WO, INC), _t(WM, WM, WO, WO), _t()]
PREDS = [
    _p((WM, 0.9), (WM, 0.8), (WM, 0.3), (WO, 0.7)),
    _p((WM, 0.9), (WM, 0.9), (WM, 0.6), (WM, 0.5), (INC, 0.55)),
    _p((WO, 0.9), (WM, 0.6)),
    _p((WM, 0.2)),
    _p((WO, 0.6)),
]


def test_counts_per_image_take_what_scores_at_the_operating_point() -> None:
    true, counted = class_counts(TRUTHS, PREDS, 0.5)
    assert true.tolist() == [[3, 1, 0], [5, 0, 0], [0, 1, 1], [2, 2, 0], [0, 0, 0]]
    assert counted.tolist() == [[2, 1, 0], [4, 0, 1], [1, 1, 0], [0, 0, 0], [0, 1, 0]]


def test_per_image_error_over_images_with_enough_faces() -> None:
    assert MIN_FACES_PER_IMAGE == 4
    e = compliance_error(TRUTHS, PREDS, 0.5).per_image
    errors = [100 * (2 / 3 - 3 / 4), 100 * (4 / 5 - 1.0)]  # -8.33, -20 points
    assert e.measured == 2 and e.no_estimate == 1  # image 3 has 4 faces and none counted
    assert e.mean_abs == pytest.approx(np.mean(np.abs(errors)))
    assert e.median_abs == pytest.approx(np.median(np.abs(errors)))
    assert e.p90_abs == pytest.approx(8 + 1 / 3 + 0.9 * (20 - 8 - 1 / 3))
    assert e.mean_signed == pytest.approx(np.mean(errors))  # the model shows the site less compliant than it is


def test_a_group_of_every_image_pools_the_counts() -> None:
    c = compliance_error(TRUTHS, PREDS, 0.5, group_sizes=(5, 6), draws=7)
    whole = c.groups[5]  # every draw is the whole set, in some order
    # true: 10 masked of 15 faces; counted: 7 masked of 11 (image 4's false bare face included)
    assert whole.measured == 7 and whole.no_estimate == 0
    assert whole.mean_abs == pytest.approx(abs(100 * (7 / 11 - 10 / 15)))
    assert whole.p90_abs == pytest.approx(whole.mean_abs) and whole.mean_signed == pytest.approx(100 * (7 / 11 - 10 / 15))
    assert c.groups[6].measured == 0 and c.groups[6].mean_abs is None  # larger than the set: no group


def test_count_bias_per_class() -> None:
    c = compliance_error(TRUTHS, PREDS, 0.5)
    assert c.true_faces == {WM: 10, WO: 4, INC: 1} and c.counted_faces == {WM: 7, WO: 3, INC: 1}
    assert c.count_bias == {WM: pytest.approx(0.7), WO: pytest.approx(0.75), INC: pytest.approx(1.0)}
    # a lower operating point counts the faces under 0.5 too
    assert compliance_error(TRUTHS, PREDS, 0.1).counted_faces == {WM: 9, WO: 3, INC: 1}
    assert compliance_error([_t(WM)], [_p()], 0.5).count_bias[WO] is None  # no true bare face: no ratio


def test_groups_are_seeded_and_distinct_images() -> None:
    rng = np.random.default_rng(4)
    labels = (WM, WO, INC)
    truths = [_t(*(labels[k] for k in rng.integers(0, 3, 6))) for _ in range(30)]
    preds = [_p(*((lb, float(s)) for lb, s in zip(t.labels, rng.uniform(0.3, 1.0, 6), strict=True))) for t in truths]
    a = compliance_error(truths, preds, 0.5, seed=1)
    assert a == compliance_error(truths, preds, 0.5, seed=1)
    assert a.groups[20].measured == 1000 and a.groups[5].measured + a.groups[5].no_estimate == 1000
    # larger groups average out: the error of 20 images is smaller than that of 5, which is smaller than one image's
    assert a.groups[20].mean_abs < a.groups[5].mean_abs < a.per_image.mean_abs  # type: ignore[operator]


def test_the_report_carries_the_compliance_error() -> None:
    report = evaluate(TRUTHS, PREDS, min_score=0.5)
    assert report.compliance is not None and report.compliance.min_score == 0.5
    saved = report.to_dict()["compliance_error"]
    assert saved["per_image"]["measured"] == 2 and saved["groups"]["5"]["measured"] == 1000
    assert saved["count_bias"][WM] == pytest.approx(0.7)
    text = markdown(report, {"note": "One validation split, not cross-validated."})
    assert "\n\nOne validation split, not cross-validated.\n\n" in text  # what the figures are, said first
    assert "## Compliance error at the operating point (score ≥ 0.5)" in text
    assert "| one image (≥ 4 true faces) | 2 | 14.2 | 14.2 | 18.8 | -14.2 | 1 |" in text
    assert "with_mask 0.70 (7 / 10)" in text
