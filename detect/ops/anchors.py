"""Anchor boxes for one feature map: cell anchors (sizes x ratios) repeated over the grid.

Ratio means height / width. An anchor of size s and ratio r has area s^2:
width = s / sqrt(r), height = s * sqrt(r). Anchors are xyxy float32 in image pixels and
are not rounded.

torchvision's AnchorGenerator (`torchvision_cell_anchors`, `grid_anchors(offset=0)`) differs
in three ways, kept as options for the converted torchvision detectors: its cell anchors are
rounded to whole pixels, ordered ratios-major, and centred on the cells' top-left corners
(cell (i, j) at (j * stride, i * stride)).
"""

import numpy as np
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


def torchvision_cell_anchors(sizes, ratios):
    """(A, 4) float32 cell anchors as torchvision's AnchorGenerator computes them: in float32,
    h = sqrt(r) * s, w = s / sqrt(r), [-w, -h, w, h] / 2 rounded half to even, ordered
    ratios-major (for ratio in ratios, for size in sizes). Size 32, ratio 0.5:
    w = 1.41421 * 32 = 45.25, h = 22.63 -> [-22.63, -11.31, 22.63, 11.31] -> [-23, -11, 23, 11]."""
    scales = np.asarray(sizes, np.float32)
    ratios = np.asarray(ratios, np.float32)
    h_ratios = np.sqrt(ratios)
    w_ratios = np.float32(1.0) / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
    hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
    return np.round(np.stack([-ws, -hs, ws, hs], axis=1) / np.float32(2.0)).astype(np.float32)


def grid_anchors(feature_height, feature_width, stride, sizes, ratios, offset=0.5, cells=None):
    """Anchors (H * W * A, 4) xyxy for a feature map of H x W cells.

    Order: cells row-major (y, then x), then the A cell anchors of `cell_anchors`.
    Cell (i, j) covers image pixels [j * stride, (j + 1) * stride) horizontally, so its
    anchors are centred at ((j + 0.5) * stride, (i + 0.5) * stride).

    Args:
        feature_height, feature_width: Python ints (static output shape) or scalar
            int tensors.
        stride: pixels per feature cell (e.g. 16).
        sizes, ratios: as in `cell_anchors`.
        offset: cell (i, j) is centred at ((j + offset) * stride, (i + offset) * stride);
            torchvision's generator uses 0. `stride` may be a (stride_y, stride_x) pair.
        cells: (A, 4) cell anchors in place of cell_anchors(sizes, ratios).
    """
    if isinstance(stride, (tuple, list)):
        stride_y, stride_x = (ops.cast(s, "float32") for s in stride)
    else:
        stride_y = stride_x = ops.cast(stride, "float32")
    centres_y = (ops.cast(ops.arange(feature_height), "float32") + offset) * stride_y
    centres_x = (ops.cast(ops.arange(feature_width), "float32") + offset) * stride_x
    grid_y, grid_x = ops.meshgrid(centres_y, centres_x, indexing="ij")
    grid_x = ops.reshape(grid_x, [-1])
    grid_y = ops.reshape(grid_y, [-1])
    shifts = ops.stack([grid_x, grid_y, grid_x, grid_y], axis=-1)
    cells = cell_anchors(sizes, ratios) if cells is None else ops.convert_to_tensor(cells, "float32")
    anchors = shifts[:, None, :] + cells[None, :, :]
    return ops.reshape(anchors, [-1, 4])
