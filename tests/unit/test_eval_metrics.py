"""`maskwatch eval` metrics against hand-computed answers: IoU, VOC all-point AP, matching, width buckets, confusion."""

from __future__ import annotations

import numpy as np
import pytest

from training.eval.metrics import (
    FACE,
    FALSE_POSITIVE,
    MEAN_AP,
    MISSED,
    Predicted,
    Truth,
    average_precision,
    evaluate,
    iou_matrix,
    match,
)

pytestmark = pytest.mark.timeout(30)

WM, WO, INC = "with_mask", "without_mask", "mask_worn_incorrectly"


@pytest.mark.parametrize(
    ("a", "b", "iou"),
    [
        ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),
        ([0, 0, 10, 10], [5, 0, 15, 10], 50 / 150),
        ([0, 0, 10, 10], [10, 10, 20, 20], 0.0),  # touching corners
        ([0, 0, 10, 10], [2, 2, 8, 8], 36 / 100),  # inside
        ([0, 0, 0, 0], [0, 0, 0, 0], 0.0),  # empty boxes do not divide by zero
    ],
)
def test_iou(a: list[float], b: list[float], iou: float) -> None:
    assert iou_matrix(np.array([a]), np.array([b]))[0, 0] == pytest.approx(iou)


@pytest.mark.parametrize(
    ("recall", "precision", "ap"),
    [
        ([0.5, 0.5, 1.0], [1.0, 0.5, 2 / 3], 0.5 + 0.5 * 2 / 3),
        ([1.0], [1.0], 1.0),
        ([0.25, 0.5], [0.5, 1.0], 0.5),  # the envelope lifts earlier precision
        ([0.0, 0.0], [0.0, 0.0], 0.0),
        ([0.5, 0.5, 0.5, 0.5], [1.0, 0.5, 1 / 3, 0.25], 0.5),
    ],
)
def test_average_precision_all_point(recall: list[float], precision: list[float], ap: float) -> None:
    assert average_precision(np.array(recall), np.array(precision)) == pytest.approx(ap)


def _p(rows: list[tuple[str, float, list[float]]]) -> Predicted:
    if not rows:
        return Predicted.empty()
    return Predicted(np.array([r[2] for r in rows], float), np.array([r[1] for r in rows]), tuple(r[0] for r in rows))


def _t(rows: list[tuple[str, list[float]]], difficult: tuple[bool, ...] = ()) -> Truth:
    return Truth(np.array([r[1] for r in rows], float).reshape(-1, 4), tuple(r[0] for r in rows), difficult)


# Image A: a 20 px masked face and a 40 px bare one; B: a 10 px masked face and an 80 px wrongly masked one; C: none.
TRUTHS = [
    _t([(WM, [10, 10, 30, 30]), (WO, [50, 50, 90, 90])]),
    _t([(WM, [0, 0, 10, 10]), (INC, [20, 20, 100, 100])]),
    _t([]),
]
PREDS = [
    _p([(WM, 0.9, [10, 10, 30, 30]), (WO, 0.6, [50, 50, 90, 90]), (WM, 0.3, [12, 10, 30, 30])]),  # hit, hit, duplicate
    _p([(WM, 0.8, [60, 0, 70, 10]), (WO, 0.7, [20, 20, 100, 100])]),  # miss, right face wrong class
    _p([(WM, 0.5, [0, 0, 50, 50])]),  # nothing there
]


def test_known_answer_per_class_and_mean() -> None:
    r = evaluate(TRUTHS, PREDS)
    # with_mask: 0.9 hit, 0.8 / 0.5 / 0.3 false -> precision 1 until recall 1/2, then nothing more found
    assert r.classes[WM].ap == pytest.approx(0.5)
    # without_mask: 0.7 false (B has no bare face), 0.6 hit -> recall 1 at precision 1/2
    assert r.classes[WO].ap == pytest.approx(0.5)
    assert r.classes[INC].ap == pytest.approx(0.0)
    assert r.mean_ap == pytest.approx(1 / 3)
    # any class: hits at ranks 1, 3, 4 of 6, 4 faces -> 0.25 * 1 + 0.25 * 0.75 + 0.25 * 0.75
    assert r.classes[FACE].ap == pytest.approx(0.625)
    assert (r.classes[WM].positives, r.classes[WO].positives, r.classes[INC].positives, r.classes[FACE].positives) == (2, 1, 1, 4)
    assert r.classes[WM].recall == pytest.approx(0.5) and r.classes[WM].precision == pytest.approx(0.25)
    assert r.classes[WO].recall == pytest.approx(1.0) and r.classes[WO].precision == pytest.approx(0.5)
    assert r.classes[INC].recall == 0.0 and r.classes[INC].precision is None


def _with_class_scores(p: Predicted, rows: list[list[float]]) -> Predicted:
    return Predicted(p.boxes, p.scores, p.labels, np.array(rows, float).reshape(-1, 3))


def test_per_class_scores_rank_every_face_in_every_class() -> None:
    """B's wrongly masked face, called without_mask at 0.7, also scores 0.2 as worn incorrectly: in that class's
    list it is the only detection, a hit. The top-class AP and the operating-point figures do not move."""
    preds = [
        _with_class_scores(PREDS[0], [[0.9, 0.05, 0.0], [0.1, 0.6, 0.05], [0.3, 0.0, 0.0]]),
        _with_class_scores(PREDS[1], [[0.8, 0.1, 0.0], [0.05, 0.7, 0.2]]),
        _with_class_scores(PREDS[2], [[0.5, 0.0, 0.0]]),
    ]
    r = evaluate(TRUTHS, preds)
    assert r.per_class_scores
    assert r.classes[INC].ap == pytest.approx(1.0) and r.classes[INC].ap_top_class == pytest.approx(0.0)
    # without_mask: A's bare face at 0.6 first, then B's incorrect face (0.7 is higher: false) -> 0.7 false, 0.6 hit
    assert r.classes[WO].ap == pytest.approx(0.5)
    # with_mask: 0.9 hit, 0.8 false, 0.5 false, 0.3 duplicate, 0.1 and 0.05 on faces of other classes: 1 of 2 found
    assert r.classes[WM].ap == pytest.approx(0.5)
    assert r.mean_ap == pytest.approx(2 / 3) and r.mean_ap_top_class == pytest.approx(1 / 3)
    assert r.classes[INC].recall == 0.0 and r.classes[INC].detections == 0  # none labelled incorrect
    assert r.confusion == evaluate(TRUTHS, PREDS).confusion
    assert not evaluate(TRUTHS, PREDS).per_class_scores


def test_class_scores_must_fit_the_detections() -> None:
    with pytest.raises(ValueError, match="class scores"):
        _with_class_scores(PREDS[1], [[0.8, 0.1, 0.0]])


def test_known_answer_widths_and_confusion() -> None:
    r = evaluate(TRUTHS, PREDS)
    assert {k: (v["faces"], v["found"]) for k, v in r.recall_by_width.items()} == {
        "faces_lt16": (1, 0),
        "faces_16_32": (1, 1),
        "faces_32_64": (1, 1),
        "faces_ge64": (1, 1),
    }
    assert r.confusion[WM] == {WM: 1, WO: 0, INC: 0, MISSED: 1}
    assert r.confusion[WO] == {WM: 0, WO: 1, INC: 0, MISSED: 0}
    assert r.confusion[INC] == {WM: 0, WO: 1, INC: 0, MISSED: 0}
    assert r.confusion[FALSE_POSITIVE] == {WM: 3, WO: 0, INC: 0}


def test_operating_score_drops_low_detections_from_recall_but_not_from_ap() -> None:
    r = evaluate(TRUTHS, PREDS, min_score=0.65)
    assert r.classes[FACE].ap == pytest.approx(0.625)
    assert r.recall_by_width["faces_32_64"]["found"] == 0  # the 0.6 bare face is below the operating score
    assert r.classes[WO].recall == 0.0
    assert r.confusion[FALSE_POSITIVE][WM] == 1  # only the 0.8 miss remains


def test_stricter_iou_turns_a_loose_box_into_a_miss() -> None:
    truths = [_t([(WM, [0, 0, 10, 10])])]
    preds = [_p([(WM, 0.9, [0, 0, 10, 16])])]  # IoU 0.625
    assert evaluate(truths, preds, iou_threshold=0.5).classes[WM].ap == pytest.approx(1.0)
    assert evaluate(truths, preds, iou_threshold=0.7).classes[WM].ap == pytest.approx(0.0)


def test_difficult_faces_are_neither_found_nor_missed() -> None:
    truths = [_t([(WM, [0, 0, 10, 10]), (WM, [20, 0, 30, 10])], difficult=(False, True))]
    preds = [_p([(WM, 0.9, [20, 0, 30, 10]), (WM, 0.8, [0, 0, 10, 10])])]
    m = match(truths, preds, WM)
    assert m.positives == 1 and m.tp.tolist() == [False, True] and m.fp.tolist() == [False, False]
    r = evaluate(truths, preds)
    assert r.classes[WM].ap == pytest.approx(1.0)
    assert r.recall_by_width["faces_lt16"] == {"faces": 1, "found": 1, "recall": 1.0}


def test_higher_scored_detection_takes_the_face_first() -> None:
    truths = [_t([(WM, [0, 0, 10, 10])])]
    preds = [_p([(WM, 0.4, [0, 0, 10, 10]), (WM, 0.9, [0, 0, 10, 11])])]
    m = match(truths, preds, WM)
    assert m.scores.tolist() == [0.9, 0.4] and m.tp.tolist() == [True, False]


def test_no_true_faces_gives_no_ap() -> None:
    r = evaluate([_t([])], [_p([(WM, 0.9, [0, 0, 5, 5])])])
    assert r.classes[WM].ap is None and r.mean_ap is None
    assert r.confusion[FALSE_POSITIVE][WM] == 1


@pytest.mark.parametrize(
    ("make", "match_text"),
    [
        (lambda: Truth(np.zeros((2, 4)), (WM,)), "boxes shape"),
        (lambda: Truth(np.zeros((1, 4)), ("cat",)), "unknown classes"),
        (lambda: Predicted(np.zeros((1, 4)), np.zeros(2), (WM,)), "scores shape"),
    ],
)
def test_bad_inputs_are_refused(make: object, match_text: str) -> None:
    with pytest.raises(ValueError, match=match_text):
        make()  # type: ignore[operator]


def test_truths_and_predictions_must_pair_up() -> None:
    with pytest.raises(ValueError, match="2 truths for 1"):
        match(TRUTHS[:2], PREDS[:1], None)


def test_bootstrap_intervals_bracket_the_ap_and_vanish_when_every_image_agrees() -> None:
    # every image alike: any resample gives the same AP, so the interval is a point
    same = evaluate([TRUTHS[0]] * 5, [PREDS[0]] * 5, resamples=50)
    assert same.intervals[FACE] == pytest.approx((same.classes[FACE].ap,) * 2)
    # images that disagree: the interval is wide and holds the figure measured on the set itself
    r = evaluate(TRUTHS * 3, PREDS * 3, resamples=200)
    assert r.resamples == 200 and set(r.intervals) == {WM, WO, INC, FACE, MEAN_AP}
    for name, ap in ((WM, r.classes[WM].ap), (WO, r.classes[WO].ap), (FACE, r.classes[FACE].ap), (MEAN_AP, r.mean_ap)):
        low, high = r.intervals[name]
        assert ap is not None and low <= ap <= high
    assert r.intervals[WO][1] - r.intervals[WO][0] > 0.2
    assert evaluate(TRUTHS, PREDS).intervals == {}  # none unless asked


def test_bootstrap_is_seeded() -> None:
    assert evaluate(TRUTHS * 3, PREDS * 3, resamples=30).intervals == evaluate(TRUTHS * 3, PREDS * 3, resamples=30).intervals
