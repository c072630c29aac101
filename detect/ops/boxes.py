"""Box conversions, area, IoU, validity, clipping, scaling and the small-box filter.

Internal format: `(..., 4)` float32 `[x1, y1, x2, y2]` in absolute pixels of the image,
continuous coordinates (a box over pixel columns 3..7 inclusive has x1=3, x2=8).
The tensor functions take tensors or arrays and return tensors of the Keras backend
(`keras.ops` only: TensorFlow, JAX and PyTorch), usable inside compiled functions with
static or dynamic leading dimensions; the `_np` forms at the end do the same on NumPy
arrays (torchvision's ops/boxes.py is the model).
"""

import importlib

import numpy as np


class _Lazy:
    """A module imported on first use. Why: the NumPy forms below serve evaluation and
    proposal recall, which start without Keras and its backend (seconds of import and its
    start-up log lines); the tensor forms import it when first called."""

    def __init__(self, name):
        self._name = name

    def __getattr__(self, attribute):
        return getattr(importlib.import_module(self._name), attribute)


keras = _Lazy("keras")
ops = _Lazy("keras.ops")


def as_boxes(boxes):
    """Converts `boxes` (..., 4) of any numeric dtype to a float32 tensor."""
    boxes = ops.convert_to_tensor(boxes)
    return boxes if ops.dtype(boxes) == "float32" else ops.cast(boxes, "float32")


def _as_float(value):
    value = ops.convert_to_tensor(value)
    return value if ops.dtype(value) == "float32" else ops.cast(value, "float32")


def widths_heights(boxes):
    """Returns (widths, heights), each (...,), of `boxes` (..., 4) xyxy; negative -> 0."""
    boxes = as_boxes(boxes)
    widths = ops.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
    heights = ops.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
    return widths, heights


def area(boxes):
    """Area (...,) of `boxes` (..., 4) xyxy; a negative width or height counts as 0."""
    widths, heights = widths_heights(boxes)
    return widths * heights


def _broadcast_iou(boxes1, boxes2):
    """IoU of `boxes1` (..., N, 1, 4) against `boxes2` (..., 1, M, 4) -> (..., N, M)."""
    inter_w = ops.maximum(
        ops.minimum(boxes1[..., 2], boxes2[..., 2]) - ops.maximum(boxes1[..., 0], boxes2[..., 0]),
        0.0,
    )
    inter_h = ops.maximum(
        ops.minimum(boxes1[..., 3], boxes2[..., 3]) - ops.maximum(boxes1[..., 1], boxes2[..., 1]),
        0.0,
    )
    intersection = inter_w * inter_h
    union = area(boxes1) + area(boxes2) - intersection
    # Zero-area pairs have union 0; their IoU is defined as 0 rather than NaN.
    return ops.divide_no_nan(intersection, union)


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
        return ops.minimum(ops.maximum(values, 0.0), upper)

    return ops.stack(
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
    return ops.logical_and(widths >= min_size, heights >= min_size)


def _convert(boxes, source, target):
    # Keras' own converter (backend-agnostic); tests pin its conventions.
    return keras.utils.bounding_boxes.convert_format(as_boxes(boxes), source=source, target=target)


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
    return ops.stack(
        [
            boxes[..., 1] / height,
            boxes[..., 0] / width,
            boxes[..., 3] / height,
            boxes[..., 2] / width,
        ],
        axis=-1,
    )


def valid_mask(boxes):
    """Bool (...,): True where x2 > x1 and y2 > y1 (zero padding rows are invalid)."""
    boxes = as_boxes(boxes)
    return ops.logical_and(boxes[..., 2] > boxes[..., 0], boxes[..., 3] > boxes[..., 1])


def scale_boxes(boxes, sx, sy):
    """`boxes` (..., 4) xyxy times (sx, sy, sx, sy); sx, sy broadcastable to (...,).

    Original -> canvas pixels with the resize scale; canvas -> original with 1 / scale.
    """
    boxes = as_boxes(boxes)
    sx = _as_float(sx)[..., None]
    sy = _as_float(sy)[..., None]
    return boxes * ops.concatenate([sx, sy, sx, sy], axis=-1)


# ----------------------------------------------------------------------------- NumPy forms
# The same maths on NumPy arrays, for code outside graphs (evaluation, proposal recall,
# R-CNN sample selection); tests pin them to the TF forms above.


def area_np(boxes):
    """Area (...,) of `boxes` (..., 4) xyxy NumPy; negative widths / heights count as 0."""
    boxes = np.asarray(boxes, np.float64)
    return np.maximum(boxes[..., 2] - boxes[..., 0], 0) * np.maximum(boxes[..., 3] - boxes[..., 1], 0)


def pairwise_iou_np(boxes1, boxes2):
    """IoU (N, M) float64 of `boxes1` (N, 4) and `boxes2` (M, 4) xyxy; zero unions give 0."""
    a = np.asarray(boxes1, np.float64).reshape(-1, 4)[:, None, :]
    b = np.asarray(boxes2, np.float64).reshape(-1, 4)[None, :, :]
    inter_w = np.maximum(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0)
    inter_h = np.maximum(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0)
    inter = inter_w * inter_h
    union = area_np(a) + area_np(b) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def valid_mask_np(boxes):
    """Bool (...,): x2 > x1 and y2 > y1 for `boxes` (..., 4) xyxy NumPy."""
    boxes = np.asarray(boxes)
    return (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])


def clip_boxes_np(boxes, height, width):
    """`boxes` (..., 4) xyxy NumPy clipped to [0, width] x [0, height]."""
    boxes = np.array(boxes, dtype=np.float32, copy=True)
    boxes[..., 0::2] = np.clip(boxes[..., 0::2], 0, width)
    boxes[..., 1::2] = np.clip(boxes[..., 1::2], 0, height)
    return boxes


def scale_boxes_np(boxes, sx, sy):
    """`boxes` (..., 4) xyxy NumPy times (sx, sy, sx, sy); sx, sy broadcastable to (...,)."""
    sx, sy = np.asarray(sx, np.float32), np.asarray(sy, np.float32)
    return np.asarray(boxes, np.float32) * np.stack(np.broadcast_arrays(sx, sy, sx, sy), axis=-1)
