"""tf.data input pipeline: decode -> 3 channels -> resize -> flip -> pad -> batch -> prefetch.

Each element is a dict (the model's inputs):
  images (N, Hc, Wc, 3) float32 RGB [0, 255], content at the top-left of the canvas;
  image_shape (N, 2) int32 content (height, width); scale (N, 2) float32 (sy, sx) from the
  original image to the canvas; image_id (N,) int64; gt_boxes (N, G, 4) xyxy canvas pixels;
  gt_labels (N, G) int32 (1..K, -1 padding).
Crowd and "difficult" boxes are not training targets (they are ignore regions for the
evaluation only), as in the reference implementations.
"""

import logging
import threading

import numpy as np
import tensorflow as tf

from detect.data.images import read_image
from detect.data.transforms import horizontal_flip, pad_boxes, pad_to_canvas, resize
from detect.errors import DetectError

log = logging.getLogger(__name__)


def canvas_for(max_size, canvas=None):
    """The fixed (height, width) canvas: explicit, or max_size rounded up to 32, square."""
    if canvas:
        return int(canvas[0]), int(canvas[1])
    side = int(-(-int(max_size) // 32) * 32)
    return side, side


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


def _target_arrays(dataset, max_boxes):
    """Per-record padded gt arrays (original pixels), crowd/difficult boxes removed."""
    n = len(dataset.records)
    boxes = np.zeros((n, max_boxes, 4), np.float32)
    labels = -np.ones((n, max_boxes), np.int32)
    truncated = 0
    for i, record in enumerate(dataset.records):
        keep = ~(np.asarray(record.iscrowd, bool) | np.asarray(record.difficult, bool))
        b, lab = record.boxes[keep], record.labels[keep]
        if len(b) > max_boxes:
            truncated += 1
            b, lab = b[:max_boxes], lab[:max_boxes]
        boxes[i, : len(b)] = b
        labels[i, : len(b)] = lab
    if truncated:
        log.warning("%d images have more than input.max_boxes=%d boxes; extra boxes dropped", truncated, max_boxes)
    return boxes, labels


def make_dataset(
    dataset,
    *,
    batch_size,
    min_size,
    max_size,
    canvas_size=None,
    max_boxes=100,
    training=False,
    flip=False,
    cache=False,
    seed=0,
    skipped=None,
    drop_remainder=None,
    proposals=None,
):
    """Build the tf.data pipeline for a detect.data.records.Dataset.

    Args:
      batch_size: images per batch; training batches drop the remainder (static shapes).
      min_size / max_size: resize rule; canvas_size: (Hc, Wc), default canvas_for(max_size).
      training: shuffle each epoch; flip: random horizontal flip (training only).
      cache: keep decoded, resized images in memory after the first epoch.
      skipped: a SkippedImages that counts unreadable images (they are dropped).
      proposals: optional (num_images, P, 4) xyxy original pixels (zero rows = padding),
        see proposal_array; they are resized and flipped with their image.
    """
    if not dataset.records:
        raise DetectError(f"{dataset.source}: the dataset has no images")
    canvas = canvas_for(max_size, canvas_size)
    boxes, labels = _target_arrays(dataset, max_boxes)
    paths = np.array([r.path for r in dataset.records], dtype=object)
    image_ids = np.array([r.image_id for r in dataset.records], np.int64)
    skipped = skipped if skipped is not None else SkippedImages(len(paths))

    def decode(index):
        path = paths[int(index)]
        try:
            return read_image(path), True
        except DetectError as e:
            skipped.add(path, e)
            return np.zeros((1, 1, 3), np.uint8), False

    def load(index):
        image, ok = tf.numpy_function(decode, [index], (tf.uint8, tf.bool), stateful=False)
        image = tf.ensure_shape(image, [None, None, 3])
        image, gt, scale = resize(image, tf.gather(boxes, index), min_size, max_size, canvas)
        example = {
            "images": image,
            "scale": scale,
            "image_id": tf.gather(image_ids, index),
            "gt_boxes": gt,
            "gt_labels": tf.gather(labels, index),
            "ok": tf.ensure_shape(ok, []),
        }
        if proposals is not None:
            sy, sx = scale[0], scale[1]
            example["proposals"] = tf.gather(proposals, index) * tf.stack([sx, sy, sx, sy])
        return example

    def finish(example, coin=None):
        image, gt = example["images"], example["gt_boxes"]
        props = example.get("proposals")
        if coin is not None:
            flip_now = coin % 2 == 0
            if props is not None:
                valid = props[:, 2] > props[:, 0]
                _, flipped = horizontal_flip(image, props)
                props = tf.where(flip_now & valid[:, None], flipped, props)
            image, gt = tf.cond(
                flip_now,
                lambda: horizontal_flip(image, gt),
                lambda: (image, gt),
            )
        content = tf.shape(image)[:2]
        gt_boxes, gt_labels = pad_boxes(gt, example["gt_labels"], max_boxes)
        # Padding rows of the input arrays keep box 0 and label -1 after resizing.
        gt_boxes = tf.where((gt_labels >= 0)[:, None], gt_boxes, 0.0)
        out = {
            "images": tf.ensure_shape(pad_to_canvas(image, canvas), list(canvas) + [3]),
            "image_shape": tf.cast(content, tf.int32),
            "scale": example["scale"],
            "image_id": example["image_id"],
            "gt_boxes": gt_boxes,
            "gt_labels": gt_labels,
        }
        if props is not None:
            out["proposals"] = props
        return out

    ds = tf.data.Dataset.range(len(paths))
    if training and not cache:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.filter(lambda example: example["ok"])
    if cache:
        ds = ds.cache()
        if training:
            ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    if training and flip:
        # Flip coins from a sequential stream: a random op inside the parallel map would
        # draw in thread order, so the same seed could flip different images.
        coins = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, coins))
    ds = ds.map(finish, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    drop = training if drop_remainder is None else drop_remainder
    ds = ds.batch(batch_size, drop_remainder=drop)
    options = tf.data.Options()
    # Every worker reads the same seeded stream of global batches and keeps its own slice
    # of each (no file sharding: examples come from an index range).
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def proposal_array(dataset, proposal_file, num_proposals):
    """(num_images, P, 4) float32 proposals in original pixels from a ProposalFile, the
    first P of each image (selective search ranks them), zero rows padding short lists."""
    out = np.zeros((len(dataset.records), int(num_proposals), 4), np.float32)
    for i, record in enumerate(dataset.records):
        boxes = np.asarray(proposal_file.get(record.image_id), np.float32)[:num_proposals]
        out[i, : len(boxes)] = boxes
    return out


def prepare_image(image, *, min_size, max_size, canvas_size):
    """One uint8 (H, W, 3) image -> model inputs with a batch dimension of 1 (NumPy)."""
    resized, _, scale = resize(tf.convert_to_tensor(image), tf.zeros([0, 4]), min_size, max_size, canvas_size)
    content = tf.shape(resized)[:2]
    return {
        "images": pad_to_canvas(resized, canvas_size)[None].numpy(),
        "image_shape": tf.cast(content, tf.int32)[None].numpy(),
        "scale": scale[None].numpy(),
    }
