"""Box conversions, area, IoU, clipping and the small-box filter.

Internal format: `(..., 4)` float32 `[x1, y1, x2, y2]` in absolute pixels of the image,
continuous coordinates (a box over pixel columns 3..7 inclusive has x1=3, x2=8).
Every function takes TF tensors or NumPy arrays, returns TF tensors, and is usable
inside `tf.function` and `tf.data` with static or dynamic leading dimensions.
"""

import keras
import tensorflow as tf


def as_boxes(boxes):
    """Converts `boxes` (..., 4) of any numeric dtype to a float32 tensor."""
    boxes = tf.convert_to_tensor(boxes)
    if boxes.dtype != tf.float32:
        boxes = tf.cast(boxes, tf.float32)
    return boxes


def _as_float(value):
    value = tf.convert_to_tensor(value)
    return value if value.dtype == tf.float32 else tf.cast(value, tf.float32)


def widths_heights(boxes):
    """Returns (widths, heights), each (...,), of `boxes` (..., 4) xyxy; negative -> 0."""
    boxes = as_boxes(boxes)
    widths = tf.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
    heights = tf.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
    return widths, heights


def area(boxes):
    """Area (...,) of `boxes` (..., 4) xyxy; a negative width or height counts as 0."""
    widths, heights = widths_heights(boxes)
    return widths * heights


def _broadcast_iou(boxes1, boxes2):
    """IoU of `boxes1` (..., N, 1, 4) against `boxes2` (..., 1, M, 4) -> (..., N, M)."""
    inter_w = tf.maximum(
        tf.minimum(boxes1[..., 2], boxes2[..., 2]) - tf.maximum(boxes1[..., 0], boxes2[..., 0]),
        0.0,
    )
    inter_h = tf.maximum(
        tf.minimum(boxes1[..., 3], boxes2[..., 3]) - tf.maximum(boxes1[..., 1], boxes2[..., 1]),
        0.0,
    )
    intersection = inter_w * inter_h
    union = area(boxes1) + area(boxes2) - intersection
    # Zero-area pairs have union 0; their IoU is defined as 0 rather than NaN.
    return tf.math.divide_no_nan(intersection, union)


def pairwise_iou(boxes1, boxes2):
    """IoU matrix of `boxes1` (N, 4) xyxy and `boxes2` (M, 4) xyxy -> (N, M) float32.

    Entries whose union is 0 (both boxes of zero area) are 0.
    """
    boxes1 = as_boxes(boxes1)
    boxes2 = as_boxes(boxes2)
    return _broadcast_iou(boxes1[:, None, :], boxes2[None, :, :])


def batched_pairwise_iou(boxes1, boxes2):
    """Per-image IoU of `boxes1` (B, N, 4) xyxy and `boxes2` (B, M, 4) xyxy -> (B, N, M)."""
    boxes1 = as_boxes(boxes1)
    boxes2 = as_boxes(boxes2)
    return _broadcast_iou(boxes1[:, :, None, :], boxes2[:, None, :, :])


def clip_boxes(boxes, height, width):
    """Clips `boxes` (..., 4) xyxy to [0, width] x [0, height].

    `height` and `width` are scalars or tensors broadcastable to (...,), e.g. one size
    per image for (B, N, 4) boxes given as (B, 1).
    """
    boxes = as_boxes(boxes)
    height = _as_float(height)
    width = _as_float(width)

    def clip(values, upper):
        return tf.minimum(tf.maximum(values, 0.0), upper)

    return tf.stack(
        [
            clip(boxes[..., 0], width),
            clip(boxes[..., 1], height),
            clip(boxes[..., 2], width),
            clip(boxes[..., 3], height),
        ],
        axis=-1,
    )


def small_box_mask(boxes, min_size):
    """Bool (...,): True where width >= `min_size` and height >= `min_size` (pixels)."""
    widths, heights = widths_heights(boxes)
    min_size = _as_float(min_size)
    return tf.logical_and(widths >= min_size, heights >= min_size)


def _convert(boxes, source, target):
    return keras.utils.bounding_boxes.convert_format(
        as_boxes(boxes), source=source, target=target
    )


def xyxy_to_xywh(boxes):
    """(..., 4) xyxy -> (..., 4) COCO [x, y, width, height]."""
    return _convert(boxes, "xyxy", "xywh")


def xywh_to_xyxy(boxes):
    """(..., 4) COCO [x, y, width, height] -> (..., 4) xyxy."""
    return _convert(boxes, "xywh", "xyxy")


def xyxy_to_cxcywh(boxes):
    """(..., 4) xyxy -> (..., 4) [centre x, centre y, width, height]."""
    return _convert(boxes, "xyxy", "center_xywh")


def cxcywh_to_xyxy(boxes):
    """(..., 4) [centre x, centre y, width, height] -> (..., 4) xyxy."""
    return _convert(boxes, "center_xywh", "xyxy")


def to_normalized_yxyx(boxes, height, width):
    """(..., 4) xyxy pixels -> (..., 4) [y1/H, x1/W, y2/H, x2/W].

    `height` and `width` are scalars or tensors broadcastable to (...,).
    """
    boxes = as_boxes(boxes)
    height = _as_float(height)
    width = _as_float(width)
    return tf.stack(
        [
            boxes[..., 1] / height,
            boxes[..., 0] / width,
            boxes[..., 3] / height,
            boxes[..., 2] / width,
        ],
        axis=-1,
    )
