"""Bilinear crops by gathers: TensorFlow's `crop_and_resize` arithmetic in keras.ops.

The portable form behind RoIAlign (ops/dispatch.py picks TensorFlow's own kernel where it
runs). Also the deterministic form on TensorFlow: CropAndResize has no deterministic GPU
kernel for its gradient with respect to the image, gather does.

Shapes: B images, H x W pixels (or feature cells), C channels, X boxes, S output size.
"""

from keras import ops


def bilinear_crops(images, boxes, box_indices, size):
    """TensorFlow's crop_and_resize(images, boxes, box_indices, [size, size], extrapolation 0)
    computed with gathers and a weighted sum.

    Args:
      images: (B, H, W, C); boxes: (X, 4) normalized [y1, x1, y2, x2] (sample i of `size`
        at y1 * (H - 1) + i * (y2 - y1) * (H - 1) / (size - 1)); box_indices: (X,).
      size: S, a Python int.
    Returns:
      (X, S, S, C) float32; samples outside the image are 0.
    """
    images = ops.cast(images, "float32")
    boxes = ops.cast(boxes, "float32")
    _, height, width, channels = ops.shape(images)
    h1, w1 = ops.cast(height - 1, "float32"), ops.cast(width - 1, "float32")
    if size == 1:
        steps = ops.convert_to_tensor([0.5], "float32")
    else:
        steps = ops.arange(size, dtype="float32") / float(size - 1)
    ys = (boxes[:, 0:1] + steps[None, :] * (boxes[:, 2:3] - boxes[:, 0:1])) * h1  # (X, S)
    xs = (boxes[:, 1:2] + steps[None, :] * (boxes[:, 3:4] - boxes[:, 1:2])) * w1
    inside_y = ops.logical_and(ys >= 0, ys <= h1)
    inside_x = ops.logical_and(xs >= 0, xs <= w1)
    inside = ops.logical_and(inside_y[:, :, None], inside_x[:, None, :])
    y0 = ops.clip(ops.floor(ys), 0.0, h1)
    x0 = ops.clip(ops.floor(xs), 0.0, w1)
    dy, dx = (ys - y0)[:, :, None, None], (xs - x0)[:, None, :, None]
    y0, x0 = ops.cast(y0, "int32"), ops.cast(x0, "int32")
    y1, x1 = ops.minimum(y0 + 1, height - 1), ops.minimum(x0 + 1, width - 1)
    flat = ops.reshape(images, (-1, channels))
    base = (ops.cast(box_indices, "int32") * height * width)[:, None, None]

    def corner(y, x):
        return ops.take(flat, base + y[:, :, None] * width + x[:, None, :], axis=0)

    top = corner(y0, x0) * (1 - dx) + corner(y0, x1) * dx
    bottom = corner(y1, x0) * (1 - dx) + corner(y1, x1) * dx
    return ops.where(inside[..., None], top * (1 - dy) + bottom * dy, 0.0)
