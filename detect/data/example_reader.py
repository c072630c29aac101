"""Per-image reads behind both input paths: index -> pixels, targets, proposals.

The tf.data pipeline's graph holds only image indices; an ExampleReader, called through
tf.numpy_function (or directly by the PyDataset path, pydataset.py), reads one record at a
time: its image file (or the uint8 image cache), its ground truth from the in-memory
Record, its proposals from the proposal file. So no array proportional to the dataset is
built or captured as a graph constant. No TensorFlow here: both paths share it.
"""

import logging
import os
import threading

import numpy as np

from detect.data.images import read_image
from detect.errors import DetectError

log = logging.getLogger(__name__)


class SkippedImages:
    """Counts distinct images that could not be decoded while the pipeline runs (thread-safe).

    A file is counted once however many epochs meet it, so `fraction` stays a share of
    the dataset.
    """

    def __init__(self, total):
        self.total = max(int(total), 1)
        self.count = 0
        self.files = []
        self._seen = set()
        self._lock = threading.Lock()

    def add(self, path, reason):
        with self._lock:
            if path in self._seen:
                return
            self._seen.add(path)
            self.count += 1
            if len(self.files) < 20:
                self.files.append(path)
        log.warning("skipped unreadable image %s (%s)", path, reason)

    @property
    def fraction(self):
        return self.count / self.total


class _ArrayProposals:
    """get(image_id) over an in-memory (num_images, P, 4) array, row i = record i."""

    def __init__(self, dataset, array):
        self.array = np.asarray(array, np.float32)
        if self.array.ndim != 3 or self.array.shape[0] != len(dataset.records) or self.array.shape[2] != 4:
            raise ValueError(f"proposals must be (num_images, P, 4), got {self.array.shape}")
        self.rows = {r.image_id: i for i, r in enumerate(dataset.records)}
        self.settings = {"max_proposals": self.array.shape[1]}

    def get(self, image_id):
        return self.array[self.rows[int(image_id)]]


def open_proposals(dataset, proposals):
    """A proposal source with get(image_id): a path is opened as a proposal file."""
    if proposals is None or hasattr(proposals, "get"):
        return proposals
    if isinstance(proposals, (str, bytes, os.PathLike)):
        from detect.proposals.cache import load_proposals

        return load_proposals(proposals)
    return _ArrayProposals(dataset, proposals)


class ExampleReader:
    """Callable index -> (image (H, W, 3) uint8, ok, boxes (G, 4) float32 xyxy original
    pixels, labels (G,) int32, image_id int64, proposals (P, 4) float32 original pixels).

    Crowd and difficult boxes are left out; at most max_boxes boxes per image (a warning
    counts the images with more). An unreadable image gives ok False (and is counted in
    `skipped`). Without proposals the last item is a (0, 4) placeholder.
    With `masks`, two more items: masks (max_boxes, H, W) uint8 0/1 at the original size,
    row g the mask of box g (zero rows pad), and mask_valid (max_boxes,) bool (False for
    padding and for objects without a mask).
    """

    dtypes = (np.uint8, np.bool_, np.float32, np.int32, np.int64, np.float32)
    mask_dtypes = (np.uint8, np.bool_)

    def __init__(self, dataset, *, max_boxes, skipped, cache=False, proposals=None, num_proposals=None,
                 masks=False):
        self.records = dataset.records
        self.masks = bool(masks)
        if self.masks:
            self.dtypes = ExampleReader.dtypes + ExampleReader.mask_dtypes
        self.max_boxes = int(max_boxes)
        self.skipped = skipped
        self.cache = None
        if cache:
            from detect.data.image_cache import ImageCache

            self.cache = ImageCache(dataset)
        self.proposals = open_proposals(dataset, proposals)
        self.num_proposals = None
        if self.proposals is not None:
            stored = (getattr(self.proposals, "settings", None) or {}).get("max_proposals")
            counts = [int(n) for n in (num_proposals, stored) if n is not None]
            if not counts:
                raise DetectError("proposals: num_proposals is needed (the proposal file records no maximum)")
            self.num_proposals = min(counts)
        self._warn_truncated()

    def _warn_truncated(self):
        truncated = sum(
            int(np.count_nonzero(~(r.iscrowd | r.difficult)) > self.max_boxes) for r in self.records
        )
        if truncated:
            log.warning("%d images have more than input.max_boxes=%d boxes; extra boxes dropped",
                        truncated, self.max_boxes)

    def image(self, index):
        """(uint8 image, ok) of record index, through the cache when there is one."""
        if self.cache is not None:
            cached = self.cache.get(index)
            if cached is not None:
                return cached, True
        path = self.records[index].path
        try:
            image = read_image(path)
        except DetectError as e:
            self.skipped.add(path, e)
            return np.zeros((1, 1, 3), np.uint8), False
        if self.cache is not None:
            self.cache.put(index, image)
        return image, True

    def targets(self, record):
        keep = ~(np.asarray(record.iscrowd, bool) | np.asarray(record.difficult, bool))
        boxes = np.asarray(record.boxes, np.float32)[keep][: self.max_boxes]
        labels = np.asarray(record.labels, np.int32)[keep][: self.max_boxes]
        return boxes.reshape(-1, 4), labels

    def mask_rows(self, record):
        """(max_boxes, H, W) uint8 masks and (max_boxes,) bool validity, in `targets` order."""
        from detect.data.masks import decode_many

        keep = ~(np.asarray(record.iscrowd, bool) | np.asarray(record.difficult, bool))
        compact = record.masks if record.masks is not None else [None] * len(record.boxes)
        kept = [m for m, k in zip(compact, keep) if k][: self.max_boxes]
        out = np.zeros((self.max_boxes, int(record.height), int(record.width)), np.uint8)
        valid = np.zeros((self.max_boxes,), bool)
        out[: len(kept)], valid[: len(kept)] = decode_many(kept, record.height, record.width)
        return out, valid

    def proposal_rows(self, record):
        """(num_proposals, 4): the first rows of the image's proposals, zero-padded."""
        out = np.zeros((self.num_proposals, 4), np.float32)
        boxes = np.asarray(self.proposals.get(record.image_id), np.float32).reshape(-1, 4)
        boxes = boxes[: self.num_proposals]
        out[: len(boxes)] = boxes
        return out

    def __call__(self, index):
        index = int(index)
        record = self.records[index]
        image, ok = self.image(index)
        boxes, labels = self.targets(record)
        if self.proposals is not None:
            props = self.proposal_rows(record)
        else:
            props = np.zeros((0, 4), np.float32)
        example = (image, np.bool_(ok), boxes, labels, np.int64(record.image_id), props)
        if self.masks:
            masks, valid = self.mask_rows(record)
            if masks.shape[1:] != image.shape[:2] and ok:
                raise DetectError(f"{record.path}: the image is {image.shape[1]}x{image.shape[0]} (WxH) but its "
                                  f"annotations (and masks) are {record.width}x{record.height}")
            example += (masks, valid)
        return example
