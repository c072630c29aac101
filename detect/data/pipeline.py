"""tf.data input pipeline: indices -> read -> resize -> flip -> pad -> group -> batch -> prefetch.

Each element is a dict (the model's inputs):
  images (N, Hc, Wc, 3) float32 RGB [0, 255], content at the top-left of the canvas, the
  rest `pad_value`; image_shape (N, 2) int32 content (height, width); scale (N, 2) float32
  (sy, sx) from the original image to the canvas; image_id (N,) int64; gt_boxes (N, G, 4)
  xyxy canvas pixels; gt_labels (N, G) int32 (1..K, -1 padding); with proposals also
  proposals (N, P, 4) xyxy canvas pixels (zero rows = padding); with masks also
  gt_masks (N, G, Hc, Wc) uint8 0/1 instance masks on the canvas (row g the mask of
  gt_boxes row g; decoded from the compact masks, resized like the image and thresholded
  at 0.5, flipped with it) and gt_mask_valid (N, G) bool (False for padding rows and
  objects without a mask, which take no part in the mask loss).
Images are resized by the rule alone (shorter side min_size, longer side <= max_size).
(Hc, Wc) is the landscape canvas or, for batches of portrait images, its transpose
(transforms.canvases); batches hold one orientation (as detectron2's
AspectRatioGroupedDataset), so little of a canvas is padding.
Crowd and "difficult" boxes are not training targets (they are ignore regions for the
evaluation only), as in the reference implementations.

Scale: nothing proportional to the dataset is captured in the graph. The graph sees only
image indices; each index is read in Python (tf.numpy_function) from the Dataset's record,
the image file (or the uint8 image cache), and the proposal file, one image at a time.
Training shuffles the indices before anything is read; every buffer holds at most a few
batches.
"""

import logging

import tensorflow as tf

from detect.data.canvas import canvas_for  # noqa: F401 - re-exported: the pipeline's canvas
from detect.data.example_reader import ExampleReader, SkippedImages  # noqa: F401 - re-exported
from detect.data.transforms import (
    canvases, horizontal_flip, pad_boxes, pad_to_canvas, pad_to_orientation_canvas, per_image_canvas, resize,
)
from detect.errors import DetectError

log = logging.getLogger(__name__)


def _check_canvas(landscape, min_size, max_size):
    if landscape[0] < min_size or landscape[1] < max_size:
        raise DetectError(
            f"input.canvas {list(landscape)} is smaller than the resized images "
            f"(up to {min_size}x{max_size}, height x width): use at least [{min_size}, {max_size}]"
        )


def _loader(reader, min_size, max_size, resize_rule="detect"):
    """index -> example with the resized image (float32) and targets in canvas pixels."""

    def load(index):
        image, ok, boxes, labels, image_id, props, *masks = tf.numpy_function(
            reader, [index], [tf.as_dtype(d) for d in reader.dtypes], stateful=False
        )
        image = tf.ensure_shape(image, [None, None, 3])
        boxes = tf.ensure_shape(boxes, [None, 4])
        image, gt, scale = resize(image, boxes, min_size, max_size, rule=resize_rule)
        example = {
            "images": image,
            "scale": scale,
            "image_id": tf.ensure_shape(image_id, []),
            "gt_boxes": gt,
            "gt_labels": tf.ensure_shape(labels, [None]),
            "ok": tf.ensure_shape(ok, []),
        }
        if reader.num_proposals is not None:
            props = tf.ensure_shape(props, [reader.num_proposals, 4])
            sy, sx = scale[0], scale[1]
            example["proposals"] = props * tf.stack([sx, sy, sx, sy])
        if masks:
            example["gt_masks"], example["gt_mask_valid"] = _resized_masks(
                masks[0], masks[1], tf.shape(image)[:2], reader.max_boxes)
        return example

    return load


def _resized_masks(masks, valid, size, max_boxes):
    """(G, H, W) uint8 masks -> (h, w, G) uint8 at the resized image's (h, w): bilinear, then
    >= 0.5 (the area a resized pixel takes of the object, as a rounded share)."""
    masks = tf.ensure_shape(masks, [max_boxes, None, None])
    planes = tf.transpose(tf.cast(masks, tf.float32), [1, 2, 0])
    resized = tf.image.resize(planes, size, method="bilinear")
    return tf.cast(resized >= 0.5, tf.uint8), tf.ensure_shape(valid, [max_boxes])


def _flip(image, gt, props, coin, masks=None):
    """Flip image, gt boxes, (valid rows of) proposals and masks (h, w, G) together when the
    coin is even; returns (image, gt, props) or, with masks, (image, gt, props, masks)."""
    flip_now = coin % 2 == 0
    if masks is not None:
        masks = tf.cond(flip_now, lambda: tf.reverse(masks, axis=[1]), lambda: masks)
        return (*_flip(image, gt, props, coin), masks)
    if props is not None:
        valid = props[:, 2] > props[:, 0]
        _, flipped = horizontal_flip(image, props)
        props = tf.where(flip_now & valid[:, None], flipped, props)
    image, gt = tf.cond(flip_now, lambda: horizontal_flip(image, gt), lambda: (image, gt))
    return image, gt, props


def _finisher(max_boxes, landscape, portrait, pad_value, per_image=False):
    """example (+ coin) -> the padded model inputs on the canvas of its orientation (per_image:
    the content minus the padding colour, unpadded: _batch_per_image pads the batch)."""
    def finish(example, coin=None):
        image, gt, props = example["images"], example["gt_boxes"], example.get("proposals")
        masks = example.get("gt_masks")
        if coin is not None:
            image, gt, props, *flipped = _flip(image, gt, props, coin, masks)
            masks = flipped[0] if flipped else None
        content = tf.shape(image)[:2]
        gt_boxes, gt_labels = pad_boxes(gt, example["gt_labels"], max_boxes)
        # Padding rows of the input arrays keep box 0 and label -1 after resizing.
        gt_boxes = tf.where((gt_labels >= 0)[:, None], gt_boxes, 0.0)
        if per_image:
            images = image - tf.cast(tf.convert_to_tensor(pad_value), image.dtype)
        else:
            images = pad_to_orientation_canvas(image, landscape, portrait, pad_value)
        out = {
            "images": images,
            "image_shape": tf.cast(content, tf.int32),
            "scale": example["scale"],
            "image_id": example["image_id"],
            "gt_boxes": gt_boxes,
            "gt_labels": gt_labels,
        }
        if props is not None:
            out["proposals"] = props
        if masks is not None:
            canvas = masks if per_image else pad_to_orientation_canvas(masks, landscape, portrait, 0)
            out["gt_masks"] = tf.transpose(canvas, [2, 0, 1])
            out["gt_mask_valid"] = tf.logical_and(example["gt_mask_valid"], gt_labels >= 0)
        return out

    return finish


def _batch(ds, batch_size, drop_remainder, grouped):
    """Batches of one orientation each (grouped), else plain batches."""
    if not grouped:
        return ds.batch(batch_size, drop_remainder=drop_remainder)

    def orientation(example):
        shape = tf.shape(example["images"])
        return tf.cast(shape[0] > shape[1], tf.int64)

    # One bucket per orientation, each at most batch_size - 1 examples (bounded buffer).
    return ds.group_by_window(
        key_func=orientation,
        reduce_func=lambda key, window: window.batch(batch_size, drop_remainder=drop_remainder),
        window_size=batch_size,
    )


def _batch_per_image(ds, batch_size, drop_remainder, pad_value):
    """Batches padded as torchvision's batch_images pads them: to the largest image of the
    batch rounded up to 32, with the padding colour (images arrive minus that colour)."""
    ds = ds.padded_batch(batch_size, drop_remainder=drop_remainder)

    def pad(batch):
        shape = tf.shape(batch["images"])
        height, width = per_image_canvas(shape[1], shape[2])
        images = tf.pad(batch["images"], [[0, 0], [0, height - shape[1]], [0, width - shape[2]], [0, 0]])
        out = {**batch, "images": images + tf.cast(tf.convert_to_tensor(pad_value), images.dtype)}
        if "gt_masks" in batch:  # (N, G, h, w), padded with 0 by padded_batch
            out["gt_masks"] = tf.pad(batch["gt_masks"], [[0, 0], [0, 0], [0, height - shape[1]],
                                                         [0, width - shape[2]]])
        return out

    return ds.map(pad, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


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
    num_proposals=None,
    pad_value=0.0,
    resize_rule="detect",
    masks=False,
):
    """Build the tf.data pipeline for a detect.data.records.Dataset.

    Args:
      batch_size: images per batch; training batches drop the remainder.
      min_size / max_size: resize rule (resize_rule: transforms.resize's rule); canvas_size:
        (Hc, Wc) landscape canvas (portrait batches use its transpose), default min_size x
        max_size rounded up to 32, or "per_image": each batch padded to its largest image
        rounded up to 32 (torchvision's batching; canvas sizes then vary between batches).
      training: shuffle image indices each epoch; flip: random horizontal flip (training only).
      cache: keep decoded uint8 images in a file-backed cache (image_cache.py) after the
        first read.
      skipped: a SkippedImages that counts unreadable images (they are dropped).
      proposals: optional proposals in original pixels, read per image: a proposal file
        path, an object with `get(image_id) -> (P', 4)` (proposals.cache.ProposalFile), or
        an (num_images, P, 4) array (row i = record i). The first num_proposals rows of
        each image are used (default: the array's P or the file's max_proposals), zero
        rows pad short lists; they are resized and flipped with their image.
      pad_value: raw pixel value of the canvas padding, scalar or (3,) RGB (the backbone's
        mean colour makes it zero after normalization).
      masks: also deliver gt_masks and gt_mask_valid (module docstring; Mask R-CNN).
    """
    if not dataset.records:
        raise DetectError(f"{dataset.source}: the dataset has no images")
    per_image = canvas_size == "per_image"
    landscape, portrait = canvases(min_size, max_size, None if per_image else canvas_size)
    _check_canvas(landscape, min_size, max_size)
    skipped = skipped if skipped is not None else SkippedImages(len(dataset.records))
    reader = ExampleReader(dataset, max_boxes=max_boxes, skipped=skipped, cache=cache,
                           proposals=proposals, num_proposals=num_proposals, masks=masks)

    ds = tf.data.Dataset.range(len(dataset.records))
    if training:
        ds = ds.shuffle(len(dataset.records), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(_loader(reader, min_size, max_size, resize_rule), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)
    ds = ds.filter(lambda example: example["ok"])
    if training and flip:
        ds = _with_coins(ds, seed)
    finish = _finisher(max_boxes, landscape, portrait, pad_value, per_image)
    ds = ds.map(finish, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    drop = training if drop_remainder is None else drop_remainder
    if per_image:
        return _finalize(_batch_per_image(ds, batch_size, drop, pad_value))
    return _finalize(_batch(ds, batch_size, drop, grouped=landscape != portrait))


def _with_coins(ds, seed):
    """Pair each example with a flip coin from a sequential stream: a random op inside the
    parallel map would draw in thread order, so the same seed could flip different images."""
    coins = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    return tf.data.Dataset.zip((ds, coins))


def _finalize(ds):
    options = tf.data.Options()
    # Every worker reads the same seeded stream of global batches and keeps its own slice
    # of each (no file sharding: examples come from an index range).
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def prepare_image(image, *, min_size, max_size, canvas_size=None, pad_value=0.0, canvas=None):
    """One uint8 (H, W, 3) image -> model inputs with a batch dimension of 1 (NumPy).

    canvas_size None: resize by the rule and pad to the canvas of the image's orientation
    (as make_dataset does), the config's `input.canvas` given as `canvas` or min x max
    rounded up to 32. An explicit (Hc, Wc) canvas_size also limits the resize so the image
    fits it (for models built on one fixed canvas).
    """
    image = tf.convert_to_tensor(image)
    if canvas_size is None:
        resized, _, scale = resize(image, tf.zeros([0, 4]), min_size, max_size)
        padded = pad_to_orientation_canvas(resized, *canvases(min_size, max_size, canvas), pad_value)
    else:
        resized, _, scale = resize(image, tf.zeros([0, 4]), min_size, max_size, canvas_size)
        padded = pad_to_canvas(resized, canvas_size, pad_value)
    content = tf.shape(resized)[:2]
    return {
        "images": padded[None].numpy(),
        "image_shape": tf.cast(content, tf.int32)[None].numpy(),
        "scale": scale[None].numpy(),
    }
