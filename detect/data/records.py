"""Dataset and Record: the one in-memory form of every annotation format.

Readers (coco.py, voc.py, csv.py, yolo.py, labelme.py, cvat.py) turn their files into a
Dataset; validate.py cleans it; formats.load_dataset() does both for a format name;
write_coco() writes it back out as COCO JSON. This module imports no reader.

Conventions:
    boxes:  (N, 4) float32 xyxy in absolute pixels of the image, 0 <= x1 < x2 <= W.
    labels: (N,) int32 in 1..K; label k names classes[k - 1].
    category_ids[k - 1] is the id label k had in the source file (COCO category id;
    1..K for VOC and CSV), so results can be written back with the original ids.
"""

import dataclasses
import json
import logging

import numpy as np

from detect.errors import DetectError
from detect.io import atomic_write

logger = logging.getLogger(__name__)

@dataclasses.dataclass(eq=False)
class Record:
    """One image and its boxes.

    Attributes:
        image_id: COCO image id; for VOC and CSV a running index starting at 1.
        file_name: the image name as written in the annotation file (relative).
        path: absolute path of the image file.
        width, height: image size in pixels (displayed orientation).
        boxes: (N, 4) float32 xyxy absolute pixels.
        labels: (N,) int32 in 1..K.
        iscrowd: (N,) bool; crowd boxes are ignore regions, not objects to detect.
        difficult: (N,) bool; VOC "difficult" objects, ignored by VOC mAP.
        masks: None (no masks: a boxes-only dataset) or one compact mask per box (COCO
            polygons, a compressed RLE dict, or None for an object without a mask; see
            detect/data/masks.py).
    """

    image_id: int
    file_name: str
    path: str
    width: int
    height: int
    boxes: np.ndarray = None
    labels: np.ndarray = None
    iscrowd: np.ndarray = None
    difficult: np.ndarray = None
    masks: list = None

    def __post_init__(self):
        self.boxes = _as_array(self.boxes, np.float32).reshape(-1, 4)
        n = len(self.boxes)
        self.labels = _as_array(self.labels, np.int32).reshape(-1)
        self.iscrowd = _flags(self.iscrowd, n)
        self.difficult = _flags(self.difficult, n)
        if not len(self.labels) == len(self.iscrowd) == len(self.difficult) == n:
            raise ValueError(
                f"{self.file_name}: {n} boxes but {len(self.labels)} labels, "
                f"{len(self.iscrowd)} iscrowd, {len(self.difficult)} difficult flags"
            )
        if self.masks is not None:
            self.masks = list(self.masks)
            if len(self.masks) != n:
                raise ValueError(f"{self.file_name}: {n} boxes but {len(self.masks)} masks")

    @classmethod
    def from_objects(cls, image_id, file_name, path, width, height, objects):
        """The Record of one image from its objects as a reader parses them: one
        (box xyxy, label, iscrowd, difficult[, mask]) tuple per object; none for a negative.
        With a fifth item (a compact mask or None) on any object, the Record has masks."""
        masks = None
        if any(len(o) > 4 for o in objects):
            masks = [o[4] if len(o) > 4 else None for o in objects]
        return cls(
            image_id=image_id,
            file_name=file_name,
            path=path,
            width=width,
            height=height,
            boxes=[o[0] for o in objects],
            labels=[o[1] for o in objects],
            iscrowd=[o[2] for o in objects],
            difficult=[o[3] for o in objects],
            masks=masks,
        )


def _as_array(values, dtype):
    if values is None:
        return np.zeros((0,), dtype)
    return np.asarray(values, dtype=dtype)


def _flags(values, n):
    if values is None:
        return np.zeros((n,), bool)
    return np.asarray(values, dtype=bool).reshape(-1)


@dataclasses.dataclass(eq=False)
class Dataset:
    """Records plus the class list.

    Attributes:
        classes: class names; label k is classes[k - 1].
        records: one Record per image, negatives (no boxes) included.
        category_ids: original category id of label k at [k - 1].
        source: the path the dataset was loaded from.
        notes: {what: count} a reader reports about its conversions (e.g. polygons
            reduced to their bounding box); shown in the validation summary.
    """

    classes: list
    records: list
    category_ids: list = None
    source: str = ""
    notes: dict = None

    def __post_init__(self):
        self.notes = dict(self.notes or {})
        self.classes = [str(name) for name in self.classes]
        if self.category_ids is None:
            self.category_ids = list(range(1, len(self.classes) + 1))
        self.category_ids = [int(c) for c in self.category_ids]
        if len(self.category_ids) != len(self.classes):
            raise ValueError(
                f"{len(self.classes)} classes but {len(self.category_ids)} category ids"
            )

    def __len__(self):
        return len(self.records)

    @property
    def has_masks(self):
        """True when some record carries masks (see Record.masks)."""
        return any(record.masks is not None for record in self.records)

    def num_boxes(self):
        """Total number of boxes over all records (crowd boxes included)."""
        return sum(len(record.boxes) for record in self.records)

    def label_to_category_id(self, label):
        """Original category id of label (1..K)."""
        label = int(label)
        if not 1 <= label <= len(self.category_ids):
            raise ValueError(f"label {label} is outside 1..{len(self.category_ids)}")
        return self.category_ids[label - 1]

    def category_id_to_label(self, cat_id):
        """Label (1..K) of an original category id; DetectError for an unknown id."""
        try:
            return self.category_ids.index(int(cat_id)) + 1
        except ValueError:
            raise DetectError(
                f"unknown category id {cat_id} (known: {self.category_ids})"
            ) from None

    def to_coco(self):
        """COCO detection JSON dict.

        images: id, file_name, width, height. annotations: id (1..), image_id,
        category_id (original ids), bbox [x, y, w, h], area (box area), iscrowd, and an
        extra "difficult" 0/1 key that pycocotools ignores; "segmentation" (polygons or
        compressed RLE) for objects with a mask. categories: id, name.
        """
        images, annotations = [], []
        for record in self.records:
            images.append(
                {
                    "id": int(record.image_id),
                    "file_name": record.file_name,
                    "width": int(record.width),
                    "height": int(record.height),
                }
            )
            masks = record.masks if record.masks is not None else [None] * len(record.boxes)
            for box, label, crowd, difficult, mask in zip(
                record.boxes, record.labels, record.iscrowd, record.difficult, masks
            ):
                annotation = _coco_annotation(len(annotations) + 1, record.image_id, box,
                                              self.label_to_category_id(label), crowd, difficult)
                if mask is not None:
                    annotation["segmentation"] = mask
                annotations.append(annotation)
        categories = [
            {"id": cat_id, "name": name}
            for cat_id, name in zip(self.category_ids, self.classes)
        ]
        return {
            "info": {"description": f"detect dataset from {self.source}"},
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }


def _coco_annotation(ann_id, image_id, box, category_id, crowd, difficult):
    # Rounding hides float32 noise (10.1 -> 10.100000381...) without moving a box
    # by more than 1e-4 px.
    x1, y1, x2, y2 = (round(float(v), 4) for v in box)
    w, h = round(x2 - x1, 4), round(y2 - y1, 4)
    return {
        "id": ann_id,
        "image_id": int(image_id),
        "category_id": int(category_id),
        "bbox": [x1, y1, w, h],
        "area": round(w * h, 4),
        "iscrowd": int(bool(crowd)),
        "difficult": int(bool(difficult)),
    }


def write_coco(dataset, path):
    """Write dataset.to_coco() to path atomically (detect.io.atomic_write)."""
    with atomic_write(path) as f:
        json.dump(dataset.to_coco(), f)

