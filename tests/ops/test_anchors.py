import math

import numpy as np
import tensorflow as tf

from detect.ops.anchors import cell_anchors, grid_anchors

R2 = math.sqrt(2.0)


def test_cell_anchors_hard_coded():
    anchors = cell_anchors([32, 64], [0.5, 1.0, 2.0]).numpy()
    # ratio = h / w with area size^2: w = size / sqrt(ratio), h = size * sqrt(ratio)
    # size 32, ratio 0.5: w = 32*sqrt(2) = 45.25, h = 32/sqrt(2) = 22.63
    expected = [
        [-16 * R2, -8 * R2, 16 * R2, 8 * R2],
        [-16, -16, 16, 16],  # size 32, ratio 1
        [-8 * R2, -16 * R2, 8 * R2, 16 * R2],  # size 32, ratio 2: w 22.63, h 45.25
        [-32 * R2, -16 * R2, 32 * R2, 16 * R2],  # size 64 (sizes-major order)
        [-32, -32, 32, 32],
        [-16 * R2, -32 * R2, 16 * R2, 32 * R2],
    ]
    np.testing.assert_allclose(anchors, expected, rtol=1e-6)


def test_cell_anchor_areas_and_ratios():
    sizes, ratios = [16, 48, 100], [0.25, 0.5, 1.0, 3.0]
    anchors = cell_anchors(sizes, ratios).numpy()
    widths, heights = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    np.testing.assert_allclose(widths * heights, np.repeat(sizes, 4) ** 2, rtol=1e-5)
    np.testing.assert_allclose(heights / widths, np.tile(ratios, 3), rtol=1e-5)


def test_grid_anchors_hard_coded_first_cells():
    anchors = grid_anchors(2, 3, 16, [32], [1.0]).numpy()
    assert anchors.shape == (2 * 3, 4)
    # Cell (i, j) centre ((j + 0.5) * 16, (i + 0.5) * 16); the 32 px square spans +-16.
    np.testing.assert_allclose(anchors[0], [8 - 16, 8 - 16, 8 + 16, 8 + 16])  # (0, 0)
    np.testing.assert_allclose(anchors[1], [24 - 16, 8 - 16, 24 + 16, 8 + 16])  # (0, 1)
    np.testing.assert_allclose(anchors[3], [8 - 16, 24 - 16, 8 + 16, 24 + 16])  # (1, 0)


def test_grid_anchors_count_and_order():
    sizes, ratios, stride, height, width = [16, 32], [0.5, 1, 2], 8, 4, 5
    anchors = grid_anchors(height, width, stride, sizes, ratios).numpy()
    cells = cell_anchors(sizes, ratios).numpy()
    num = len(sizes) * len(ratios)
    assert anchors.shape == (height * width * num, 4)
    for i in range(height):
        for j in range(width):
            centre = np.array([(j + 0.5) * stride, (i + 0.5) * stride] * 2)
            start = (i * width + j) * num
            np.testing.assert_allclose(anchors[start : start + num], cells + centre, rtol=1e-6)


def test_grid_anchors_static_and_dynamic_sizes():
    assert grid_anchors(3, 4, 16, [32], [0.5, 1.0]).shape == (24, 4)

    @tf.function(input_signature=[tf.TensorSpec([], tf.int32)] * 2)
    def dynamic(height, width):
        return grid_anchors(height, width, 16, [32], [0.5, 1.0])

    anchors = dynamic(tf.constant(3), tf.constant(4))
    np.testing.assert_allclose(anchors.numpy(), grid_anchors(3, 4, 16, [32], [0.5, 1.0]).numpy())
    assert dynamic(tf.constant(0), tf.constant(4)).shape == (0, 4)
