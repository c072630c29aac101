"""Anchor boxes for one feature map: cell anchors (sizes x ratios) repeated over the grid.

Ratio means height / width. An anchor of size s and ratio r has area s^2:
width = s / sqrt(r), height = s * sqrt(r). Anchors are xyxy float32 in image pixels and
are not rounded.
"""

from keras import ops


def _as_vector(values, name):
    values = ops.reshape(ops.cast(ops.convert_to_tensor(values), "float32"), [-1])
    if values.shape[0] == 0:
        raise ValueError(f"anchor {name} must not be empty")
    return values


def cell_anchors(sizes, ratios):
    """Anchors (A, 4) xyxy centred at (0, 0), A = len(sizes) * len(ratios).

    Ordered sizes-major: for size in sizes, for ratio in ratios.

    Args:
        sizes: sequence of anchor sizes in pixels (sqrt of the area).
        ratios: sequence of aspect ratios height / width.
    """
    sizes = _as_vector(sizes, "sizes")
    ratios = _as_vector(ratios, "ratios")
    sqrt_ratios = ops.sqrt(ratios)
    widths = ops.reshape(sizes[:, None] / sqrt_ratios[None, :], [-1])
    heights = ops.reshape(sizes[:, None] * sqrt_ratios[None, :], [-1])
    return ops.stack([-0.5 * widths, -0.5 * heights, 0.5 * widths, 0.5 * heights], axis=-1)


def grid_anchors(feature_height, feature_width, stride, sizes, ratios):
    """Anchors (H * W * A, 4) xyxy for a feature map of H x W cells.

    Order: cells row-major (y, then x), then the A cell anchors of `cell_anchors`.
    Cell (i, j) covers image pixels [j * stride, (j + 1) * stride) horizontally, so its
    anchors are centred at ((j + 0.5) * stride, (i + 0.5) * stride).

    Args:
        feature_height, feature_width: Python ints (static output shape) or scalar
            int tensors.
        stride: pixels per feature cell (e.g. 16).
        sizes, ratios: as in `cell_anchors`.
    """
    stride = ops.cast(stride, "float32")
    centres_y = (ops.cast(ops.arange(feature_height), "float32") + 0.5) * stride
    centres_x = (ops.cast(ops.arange(feature_width), "float32") + 0.5) * stride
    grid_y, grid_x = ops.meshgrid(centres_y, centres_x, indexing="ij")
    grid_x = ops.reshape(grid_x, [-1])
    grid_y = ops.reshape(grid_y, [-1])
    shifts = ops.stack([grid_x, grid_y, grid_x, grid_y], axis=-1)
    anchors = shifts[:, None, :] + cell_anchors(sizes, ratios)[None, :, :]
    return ops.reshape(anchors, [-1, 4])
