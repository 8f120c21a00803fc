"""A PASCAL VOC data set of faces: annotation XML files and their images, labels mapped to Contract 2 class names."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from maskwatch.detections import CLASS_IDS, INCORRECT, WITH_MASK, WITHOUT_MASK

# VOC object names as they appear in public face-mask sets, to Contract 2 class names.
VOC_LABELS: dict[str, str] = {
    WITH_MASK: WITH_MASK,
    WITHOUT_MASK: WITHOUT_MASK,
    INCORRECT: INCORRECT,
    "mask_weared_incorrect": INCORRECT,
}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class DatasetError(ValueError):
    """The data directory or one of its annotation files is not a usable VOC set."""


@dataclass(frozen=True)
class Sample:
    """One annotated image: boxes [M,4] as pixel (xmin, ymin, xmax, ymax), class names, difficult flags."""

    name: str
    image_path: Path
    width: int
    height: int
    boxes: np.ndarray = field(repr=False)
    labels: tuple[str, ...]
    difficult: tuple[bool, ...]

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise DatasetError(f"{self.name}: image size {self.width}x{self.height}")
        if self.boxes.shape != (len(self.labels), 4) or len(self.difficult) != len(self.labels):
            raise DatasetError(f"{self.name}: {self.boxes.shape} boxes for {len(self.labels)} labels")
        for label in self.labels:
            if label not in CLASS_IDS:
                raise DatasetError(f"{self.name}: unknown class {label!r}")

    @property
    def widths(self) -> np.ndarray:
        return self.boxes[:, 2] - self.boxes[:, 0]

    def read_jpeg(self) -> bytes:
        """The image as JPEG bytes (what a camera frame is); other formats are re-encoded."""
        data = self.image_path.read_bytes()
        if self.image_path.suffix.lower() in (".jpg", ".jpeg"):
            return data
        import cv2

        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise DatasetError(f"{self.image_path}: not a decodable image")
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:
            raise DatasetError(f"{self.image_path}: cannot encode as JPEG")
        return buf.tobytes()


def _text(node: ET.Element, path: str, where: str) -> str:
    found = node.find(path)
    if found is None or found.text is None:
        raise DatasetError(f"{where}: missing <{path}>")
    return found.text.strip()


def parse_annotation(xml_path: Path, images_dir: Path) -> Sample:
    """One VOC XML file; the image is `images_dir/<filename>`, else the XML's stem with an image suffix."""
    where = str(xml_path)
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        raise DatasetError(f"{where}: {exc}") from exc
    filename = root.findtext("filename", default="").strip()
    image_path = images_dir / filename if filename else None
    if image_path is None or not image_path.is_file():
        candidates = [images_dir / f"{xml_path.stem}{s}" for s in IMAGE_SUFFIXES]
        image_path = next((c for c in candidates if c.is_file()), None)
        if image_path is None:
            raise DatasetError(f"{where}: image {filename or xml_path.stem} not found in {images_dir}")
    width = int(float(_text(root, "size/width", where)))
    height = int(float(_text(root, "size/height", where)))
    boxes, labels, difficult = [], [], []
    for obj in root.findall("object"):
        name = _text(obj, "name", where)
        if name not in VOC_LABELS:
            raise DatasetError(f"{where}: unknown object name {name!r} (known: {sorted(VOC_LABELS)})")
        box = [float(_text(obj, f"bndbox/{k}", where)) for k in ("xmin", "ymin", "xmax", "ymax")]
        if box[2] <= box[0] or box[3] <= box[1]:
            raise DatasetError(f"{where}: empty box {box}")
        boxes.append(box)
        labels.append(VOC_LABELS[name])
        difficult.append(obj.findtext("difficult", default="0").strip() == "1")
    return Sample(
        name=xml_path.stem,
        image_path=image_path,
        width=width,
        height=height,
        boxes=np.asarray(boxes, np.float64).reshape(-1, 4),
        labels=tuple(labels),
        difficult=tuple(difficult),
    )


def load(data_dir: Path) -> list[Sample]:
    """Every annotated image of `data_dir` (with `annotations/*.xml` and `images/`), sorted by name."""
    ann_dir, img_dir = data_dir / "annotations", data_dir / "images"
    if not ann_dir.is_dir() or not img_dir.is_dir():
        raise DatasetError(f"{data_dir}: want annotations/ (VOC XML) and images/ under it")
    samples = [parse_annotation(p, img_dir) for p in sorted(ann_dir.glob("*.xml"))]
    if not samples:
        raise DatasetError(f"{ann_dir}: no .xml annotation files")
    return samples
