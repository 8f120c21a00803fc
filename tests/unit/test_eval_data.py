"""VOC reading and the train/validation split by image with near-duplicates kept together."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.voc_fixtures import write_voc
from training.eval import dataset, split

pytestmark = pytest.mark.timeout(30)


def test_reads_boxes_labels_and_maps_the_kaggle_name(tmp_path: Path) -> None:
    write_voc(tmp_path, [("a", (64, 48), [("with_mask", (1, 2, 11, 14)), ("mask_weared_incorrect", (20, 5, 40, 30))])], difficult=[("a", 1)])
    (s,) = dataset.load(tmp_path)
    assert (s.name, s.width, s.height) == ("a", 64, 48)
    assert s.labels == ("with_mask", "mask_worn_incorrectly")
    assert s.difficult == (False, True)
    np.testing.assert_array_equal(s.boxes, [[1, 2, 11, 14], [20, 5, 40, 30]])
    np.testing.assert_array_equal(s.widths, [10, 20])
    assert s.read_jpeg()[:2] == b"\xff\xd8"


@pytest.mark.parametrize(
    ("xml", "match"),
    [
        ("<annotation><filename>a.jpg</filename><size><width>8</width><height>8</height></size>"
         "<object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></object>"
         "</annotation>", "unknown object name 'cat'"),
        ("<annotation><filename>a.jpg</filename><size><width>8</width></size></annotation>", "missing <size/height>"),
        ("<annotation><filename>a.jpg</filename><size><width>8</width><height>8</height></size>"
         "<object><name>with_mask</name><bndbox><xmin>3</xmin><ymin>1</ymin><xmax>3</xmax><ymax>2</ymax></bndbox>"
         "</object></annotation>", "empty box"),
        ("<annotation><filename>nope.jpg</filename>", "a.xml"),  # malformed XML names the file
    ],
)
def test_bad_annotations_name_the_file_and_the_problem(tmp_path: Path, xml: str, match: str) -> None:
    write_voc(tmp_path, [("a", (8, 8), [])])
    (tmp_path / "annotations" / "a.xml").write_text(xml, encoding="utf-8")
    with pytest.raises(dataset.DatasetError, match=match):
        dataset.load(tmp_path)


def test_missing_image_and_missing_folders(tmp_path: Path) -> None:
    with pytest.raises(dataset.DatasetError, match="want annotations/"):
        dataset.load(tmp_path)
    write_voc(tmp_path, [("a", (8, 8), [])])
    (tmp_path / "images" / "a.jpg").unlink()
    with pytest.raises(dataset.DatasetError, match="not found"):
        dataset.load(tmp_path)


@pytest.mark.parametrize(
    ("hashes", "max_hamming", "groups"),
    [
        ([0b0, 0b1, 0b11111111], 1, [0, 0, 2]),
        ([0b0, 0b1, 0b11], 1, [0, 0, 0]),  # transitive: 0~1, 1~3
        ([0b0, 0b11], 1, [0, 1]),
    ],
)
def test_duplicate_groups(hashes: list[int], max_hamming: int, groups: list[int]) -> None:
    assert split.duplicate_groups(hashes, max_hamming) == groups


def _ten(tmp_path: Path) -> list[dataset.Sample]:
    write_voc(tmp_path, [(f"im{i}", (64, 48), [("with_mask", (5, 5, 20, 20))]) for i in range(10)])
    # im9 is a re-encoded copy of im0: it must land on the same side
    shutil.copy(tmp_path / "images" / "im0.jpg", tmp_path / "images" / "im9.jpg")
    return dataset.load(tmp_path)


def test_split_is_deterministic_and_keeps_duplicates_together(tmp_path: Path) -> None:
    samples = _ten(tmp_path)
    a = split.split(samples, val_fraction=0.3, seed=3)
    b = split.split(list(reversed(samples)), val_fraction=0.3, seed=3)
    assert sorted(s.name for s in a.val) == sorted(s.name for s in b.val)
    assert a.groups == 9
    assert 3 <= len(a.val) <= 4 and len(a.train) + len(a.val) == 10
    val = {s.name for s in a.val}
    assert ("im0" in val) == ("im9" in val)
    assert {s.name for s in a.part("all")} == {s.name for s in samples}
    others = {frozenset(s.name for s in split.split(samples, 0.3, seed).val) for seed in range(6)}
    assert len(others) > 1  # the seed matters


def test_split_refuses_bad_arguments(tmp_path: Path) -> None:
    samples = _ten(tmp_path)
    with pytest.raises(ValueError, match="val_fraction"):
        split.split(samples, val_fraction=1.0)
    with pytest.raises(ValueError, match="unknown split"):
        split.split(samples).part("test")


def test_dhash_is_stable_under_reencoding_and_differs_between_images() -> None:
    rng = np.random.default_rng(0)
    import cv2

    img = cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (128, 96), interpolation=cv2.INTER_CUBIC)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 60])
    assert ok
    again = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    other = cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (128, 96), interpolation=cv2.INTER_CUBIC)
    assert split.hamming(split.dhash(img), split.dhash(again)) <= 8
    assert split.hamming(split.dhash(img), split.dhash(other)) > split.DEFAULT_MAX_HAMMING


def _sample(name: str, labels: tuple[str, ...]) -> dataset.Sample:
    boxes = np.array([[0, 0, 10, 10]] * len(labels), float).reshape(-1, 4)
    return dataset.Sample(name, Path(f"{name}.jpg"), 64, 48, boxes, labels, (False,) * len(labels))


def _fold_set() -> tuple[list[dataset.Sample], list[int]]:
    """40 images: 10 with one face worn incorrectly (two of them duplicates of each other), 3 with two, the rest masked;
    hashes far apart (distinct images) except the duplicates' (equal)."""
    samples, hashes = [], []
    for i in range(40):
        labels = ("with_mask",) * (1 + i % 3)
        if i < 10:
            labels += ("mask_weared_incorrect",)
        elif i < 13:
            labels += ("mask_weared_incorrect",) * 2
        samples.append(_sample(f"im{i:02d}", tuple(dataset.VOC_LABELS[lb] for lb in labels)))
        hashes.append(int.from_bytes(np.random.default_rng(i).bytes(32), "big"))  # ~128 of 256 bits apart
    return samples, hashes


def test_folds_keep_duplicates_together_and_share_out_the_rare_class() -> None:
    samples, hashes = _fold_set()
    hashes[1] = hashes[0]  # im01 is a duplicate of im00
    f = split.folds(samples, k=5, seed=0, hashes=hashes)
    assert len(f.fold) == 40 and set(f.fold) == set(range(5)) and f.groups == 39
    assert f.fold[0] == f.fold[1]
    incorrect = f.faces("mask_worn_incorrectly")
    assert sum(incorrect) == 16 and max(incorrect) - min(incorrect) <= 2  # 16 over 5 folds: 3 or 4 each, a pair may tip it
    sizes = [f.fold.count(k) for k in range(5)]
    assert max(sizes) - min(sizes) <= 2  # the images shared out too (one duplicate pair may tip it)
    # each fold held out once: its images are the validation, the others the training, none in both
    seen: list[str] = []
    for k in range(5):
        part = f.part(k)
        assert not {s.name for s in part.train} & {s.name for s in part.val}
        assert len(part.train) + len(part.val) == 40
        seen += [s.name for s in part.val]
    assert sorted(seen) == sorted(s.name for s in samples)


def test_folds_are_deterministic_for_a_seed_and_move_with_it() -> None:
    samples, hashes = _fold_set()
    a = split.folds(samples, k=4, seed=3, hashes=hashes)
    assert a == split.folds(samples, k=4, seed=3, hashes=hashes)
    # the listing order does not matter: the same images land in the same folds
    back = split.folds(list(reversed(samples)), k=4, seed=3, hashes=list(reversed(hashes)))
    assert {s.name: f for s, f in zip(back.samples, back.fold, strict=True)} == {
        s.name: f for s, f in zip(a.samples, a.fold, strict=True)
    }
    assert len({split.folds(samples, k=4, seed=s, hashes=hashes).fold for s in range(5)}) > 1


@pytest.mark.parametrize(("k", "size", "match_text"), [(1, 40, "folds 1 outside 2..20"), (21, 40, "outside"), (4, 3, "4 folds for 3 groups")])
def test_folds_refuse_bad_counts(k: int, size: int, match_text: str) -> None:
    samples, hashes = _fold_set()
    with pytest.raises(ValueError, match=match_text):
        split.folds(samples[:size], k=k, hashes=hashes[:size])
    with pytest.raises(ValueError, match="fold 4 outside 0..3"):
        split.folds(samples, k=4, hashes=hashes).part(4)
