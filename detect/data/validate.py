"""Checks run on every loaded dataset, ending in a Summary.

Box problems are repaired where the intent is clear and dropped otherwise:
    partly outside the image     -> clipped to [0, W] x [0, H] (counted)
    NaN / infinite coordinate    -> dropped with a warning naming the file and box index
    inverted (x2 < x1 or y2 < y1)-> dropped with a warning
    zero width or height         -> dropped with a warning
    fully outside the image      -> dropped with a warning
Problems that make the data untrustworthy are a DetectError naming the file: a label
outside 1..K, a missing or unreadable image, or a width/height that disagrees with the
image header.

Image headers are read through a HeaderCache (header_cache.py): a second check of the
same, unchanged files reads no image.
"""

import dataclasses
import logging

import numpy as np

from detect.data.header_cache import HeaderCache
from detect.data.records import Dataset
from detect.errors import DetectError

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Summary:
    """Counts from validate(): boxes are those kept; clipped boxes are among them."""

    source: str = ""
    images: int = 0
    boxes: int = 0
    clipped: int = 0
    dropped: int = 0
    negatives: int = 0
    classes: int = 0
    notes: dict = dataclasses.field(default_factory=dict)

    def __str__(self):
        notes = [f"  {what}: {count}" for what, count in self.notes.items() if count]
        return "\n".join(
            [
                f"dataset {self.source}",
                f"  images:    {self.images} ({self.negatives} without boxes)",
                f"  boxes:     {self.boxes} kept, {self.classes} classes",
                f"  clipped:   {self.clipped} boxes partly outside their image",
                f"  dropped:   {self.dropped} degenerate, inverted, NaN or outside boxes",
            ]
            + notes
        )


def validate(dataset, check_images=True):
    """Clip, drop and check every record.

    Args:
        dataset: a Dataset as a reader returns it (not modified).
        check_images: also check that every image exists, has a readable header and has
            the width/height the annotations state.

    Returns:
        (Dataset, Summary): a new Dataset with cleaned boxes, and the counts.
    """
    summary = Summary(source=dataset.source, classes=len(dataset.classes), notes=dict(dataset.notes))
    headers = HeaderCache(dataset.source) if check_images else None
    records = []
    for record in dataset.records:
        _check_record(record, len(dataset.classes), headers, dataset.source)
        keep, boxes, clipped = _clean_boxes(record)
        summary.clipped += clipped
        summary.dropped += int(np.count_nonzero(~keep))
        records.append(
            dataclasses.replace(
                record,
                boxes=boxes[keep],
                labels=record.labels[keep],
                iscrowd=record.iscrowd[keep],
                difficult=record.difficult[keep],
                masks=None if record.masks is None else [m for m, k in zip(record.masks, keep) if k],
            )
        )
        summary.boxes += int(np.count_nonzero(keep))
        summary.negatives += int(not keep.any())
    if headers is not None:
        headers.save()
    summary.images = len(records)
    cleaned = Dataset(
        classes=list(dataset.classes),
        records=records,
        category_ids=list(dataset.category_ids),
        source=dataset.source,
        notes=dict(dataset.notes),
    )
    return cleaned, summary


def _check_record(record, num_classes, headers, source):
    """DetectError for a bad label, size or image file (files only with a HeaderCache)."""
    bad = (record.labels < 1) | (record.labels > num_classes)
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        raise DetectError(
            f"{record.path}: box {index} has label {int(record.labels[index])}, "
            f"outside the {num_classes} classes 1..{num_classes}"
        )
    if record.width <= 0 or record.height <= 0:
        raise DetectError(
            f"{record.path}: invalid image size {record.width}x{record.height} in the annotations"
        )
    if headers is None:
        return
    try:
        width, height = headers.image_size(record.path)
    except (FileNotFoundError, NotADirectoryError):
        raise DetectError(f"image file not found: {record.path} (listed in {source})") from None
    if (width, height) != (record.width, record.height):
        hint = ""
        if (height, width) == (record.width, record.height):
            hint = (" (width and height swapped: sizes and boxes are expected in the displayed "
                    "orientation, the image's EXIF orientation tag applied, as labelling tools show it)")
        raise DetectError(
            f"{record.path}: annotations say {record.width}x{record.height} (WxH) "
            f"but the image is {width}x{height}{hint}"
        )


def _clean_boxes(record):
    """(keep (N,) bool, boxes (N, 4) xyxy clipped, number of kept boxes clipped)."""
    boxes = record.boxes
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(boxes).all(axis=1)
        x1, y1, x2, y2 = boxes.T
        # The common case, every box proper and inside the image, costs four comparisons.
        if (finite & (x1 >= 0) & (y1 >= 0) & (x2 > x1) & (y2 > y1) & (x2 <= record.width)
                & (y2 <= record.height)).all():
            return np.ones(len(boxes), bool), boxes, 0
        inverted = finite & ((x2 < x1) | (y2 < y1))
        empty = finite & ~inverted & ((x2 == x1) | (y2 == y1))
        outside = finite & ~inverted & ~empty & (
            (x2 <= 0) | (y2 <= 0) | (x1 >= record.width) | (y1 >= record.height)
        )
    reasons = (
        (~finite, "has a NaN or infinite coordinate"),
        (inverted, "is inverted (x2 < x1 or y2 < y1)"),
        (empty, "has zero width or height"),
        (outside, f"is fully outside the {record.width}x{record.height} image"),
    )
    keep = np.ones(len(boxes), bool)
    for mask, reason in reasons:
        for index in np.flatnonzero(mask):
            logger.warning("%s: box %d %s %s: dropped", record.path, index, reason,
                           _format_box(boxes[index]))
        keep &= ~mask
    limits = np.array([record.width, record.height, record.width, record.height], np.float32)
    clipped_boxes = boxes.copy()
    clipped_boxes[keep] = np.clip(boxes[keep], 0, limits)
    clipped = int(np.count_nonzero((clipped_boxes[keep] != boxes[keep]).any(axis=1)))
    return keep, clipped_boxes, clipped


def _format_box(box):
    return "[" + ", ".join(f"{float(v):g}" for v in box) + "]"
