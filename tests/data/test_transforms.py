"""Resize rule, exact box scaling, horizontal flip, canvas padding and box padding."""

import numpy as np
import pytest
import tensorflow as tf

from detect.data.transforms import (
    canvases,
    horizontal_flip,
    pad_boxes,
    pad_to_canvas,
    resize,
    resize_scale,
    resized_shape,
)


def shape_of(height, width, min_size, max_size, canvas=None):
    new_h, new_w = resized_shape(height, width, min_size, max_size, canvas)
    return int(new_h), int(new_w)


@pytest.mark.parametrize(
    "height, width, canvas, scale, expected",
    [
        # shorter side 300 -> 600: scale 600/300 = 2.0; longer side 500 * 2 = 1000 fits.
        (300, 500, None, 2.0, (600, 1000)),
        # scale min(600/300 = 2, 1000/800 = 1.25) = 1.25: 300 * 1.25 = 375, 800 * 1.25 = 1000.
        (300, 800, None, 1.25, (375, 1000)),
        # portrait: the same rule on the other axis.
        (800, 300, None, 1.25, (1000, 375)),
        # downscaling: min(600/1200 = 0.5, 1000/1600 = 0.625) = 0.5 -> 600 x 800.
        (1200, 1600, None, 0.5, (600, 800)),
        # canvas 512 x 512: min(2, 2, 512/300 = 1.7067, 512/500 = 1.024) = 1.024;
        # 300 * 1.024 = 307.2 -> 307, 500 * 1.024 = 512.
        (300, 500, (512, 512), 1.024, (307, 512)),
        # a wide canvas does not limit: min(2, 1.25, 1000/800 = 1.25, 2000/300) = 1.25.
        (800, 300, (1000, 2000), 1.25, (1000, 375)),
        # a short canvas does: min(2, 2, 400/300 = 1.333, 1000/500 = 2) = 1.333 -> 400 x 667.
        (300, 500, (400, 1000), 4 / 3, (400, 667)),
    ],
)
def test_resize_rule(height, width, canvas, scale, expected):
    assert float(resize_scale(height, width, 600, 1000, canvas)) == pytest.approx(scale, rel=1e-6)
    assert shape_of(height, width, 600, 1000, canvas) == expected


def test_portrait_voc_image_is_resized_by_the_rule_alone():
    # 375 x 500 (W x H) at min 600 / max 1000: scale min(600/375 = 1.6, 1000/500 = 2) = 1.6
    # -> 600 x 800 (W x H), whatever canvas the landscape images use.
    assert shape_of(500, 375, 600, 1000) == (800, 600)
    landscape, portrait = canvases(600, 1000, [608, 1008])
    assert landscape == (608, 1008) and portrait == (1008, 608)
    assert 800 <= portrait[0] and 600 <= portrait[1]


def test_canvases_round_the_rule_bounds_up_to_32():
    # Landscape content is at most min_size x max_size (h x w): 600 -> 608, 1000 -> 1024.
    assert canvases(600, 1000) == ((608, 1024), (1024, 608))
    assert canvases(128, 128) == ((128, 128), (128, 128))
    # Every landscape resize fits: 375 x 500 (h x w) -> 600 x 800; 300 x 1000 -> 300 x 1000.
    for h, w in [(375, 500), (300, 1000), (480, 640), (1, 10000), (500, 500)]:
        new_h, new_w = shape_of(h, w, 600, 1000)
        assert new_h <= 608 and new_w <= 1024


def test_resized_shape_is_at_least_one_pixel():
    # 1 x 10000 strip: scale min(600/1, 1000/10000 = 0.1) = 0.1 -> 0.1 px rounds to 0 -> 1.
    assert shape_of(1, 10000, 600, 1000) == (1, 1000)


def test_resize_scales_boxes_by_the_rounded_sizes():
    # 7 x 9 image, min 10: scale 10/7; height 10, width round(9 * 10/7 = 12.857) = 13.
    # The box scales are the rounded ratios sy = 10/7, sx = 13/9, so the full-image box
    # [0, 0, 9, 7] becomes exactly the full resized image [0, 0, 13, 10].
    image = tf.zeros([7, 9, 3], tf.uint8)
    boxes = tf.constant([[0, 0, 9, 7], [4.5, 3.5, 9, 7]], tf.float32)
    resized, out, scale = resize(image, boxes, 10, 100)
    assert resized.shape == (10, 13, 3) and resized.dtype == tf.float32
    np.testing.assert_allclose(scale.numpy(), [10 / 7, 13 / 9], rtol=1e-6)
    # [4.5 * 13/9 = 6.5, 3.5 * 10/7 = 5, 13, 10]
    np.testing.assert_allclose(out.numpy(), [[0, 0, 13, 10], [6.5, 5, 13, 10]], rtol=1e-6)


def test_resize_keeps_a_rectangle_inside_its_scaled_box():
    # 20 x 40 image (h x w) with a white block on rows 4..11, columns 10..29
    # (box [10, 4, 30, 12]); min 40, max 100 -> scale 2 -> 40 x 80, box [20, 8, 60, 24].
    image = np.zeros((20, 40, 3), np.uint8)
    image[4:12, 10:30] = 255
    resized, out, _ = resize(tf.constant(image), tf.constant([[10, 4, 30, 12]], tf.float32), 40, 100)
    np.testing.assert_allclose(out.numpy(), [[20, 8, 60, 24]])
    pixels = resized.numpy()
    # Interior of the scaled box is white, the outside (away from the edge blur) is black.
    np.testing.assert_allclose(pixels[9:23, 21:59], 255, atol=1e-3)
    assert pixels[:6].max() < 1e-3 and pixels[:, :18].max() < 1e-3 and pixels[26:].max() < 1e-3


def test_resize_empty_boxes():
    resized, out, _ = resize(tf.zeros([5, 5, 3]), tf.zeros([0, 4]), 10, 10)
    assert resized.shape == (10, 10, 3) and out.shape == (0, 4)


def test_resize_inside_a_function_with_unknown_sizes():
    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([None, 4], tf.float32)])
    def run(image, boxes):
        return resize(image, boxes, 600, 1000)

    image, boxes, _ = run(tf.zeros([300, 800, 3], tf.uint8), tf.constant([[0, 0, 800, 300]], tf.float32))
    assert image.shape == (375, 1000, 3)
    np.testing.assert_allclose(boxes.numpy(), [[0, 0, 1000, 375]])


def test_horizontal_flip_formula():
    # W = 10: x1' = W - x2, x2' = W - x1; [1, 2, 4, 6] -> [10 - 4, 2, 10 - 1, 6] = [6, 2, 9, 6].
    image = np.zeros((8, 10, 3), np.float32)
    image[2:6, 1:4] = 1.0  # columns 1..3 = box x 1..4
    flipped, boxes = horizontal_flip(tf.constant(image), tf.constant([[1, 2, 4, 6], [0, 0, 10, 8]], tf.float32))
    np.testing.assert_array_equal(boxes.numpy(), [[6, 2, 9, 6], [0, 0, 10, 8]])
    # The mirrored block occupies columns 10 - 4 = 6 .. 10 - 1 - 1 = 8, i.e. the new box.
    cols = np.nonzero(flipped.numpy()[3, :, 0])[0]
    np.testing.assert_array_equal(cols, [6, 7, 8])


def test_horizontal_flip_twice_is_identity():
    rng = np.random.default_rng(0)
    image = tf.constant(rng.random((6, 11, 3)), tf.float32)
    boxes = tf.constant([[0.5, 1, 3.25, 5], [7, 0, 11, 6]], tf.float32)
    back_image, back_boxes = horizontal_flip(*horizontal_flip(image, boxes))
    np.testing.assert_array_equal(back_image.numpy(), image.numpy())
    np.testing.assert_array_equal(back_boxes.numpy(), boxes.numpy())


def test_horizontal_flip_empty_boxes():
    _, boxes = horizontal_flip(tf.zeros([4, 4, 3]), tf.zeros([0, 4]))
    assert boxes.shape == (0, 4)


def test_pad_to_canvas_puts_content_top_left():
    image = tf.ones([3, 5, 3])
    out = pad_to_canvas(image, (4, 8)).numpy()
    assert out.shape == (4, 8, 3)
    assert out[:3, :5].min() == 1 and out[3:].max() == 0 and out[:, 5:].max() == 0


def test_pad_to_canvas_with_a_colour():
    # 2 x 2 content of 10 on a 3 x 4 canvas padded with RGB (1, 2, 3).
    image = tf.fill([2, 2, 3], 10.0)
    out = pad_to_canvas(image, (3, 4), pad_value=(1.0, 2.0, 3.0)).numpy()
    assert out.shape == (3, 4, 3)
    np.testing.assert_array_equal(out[:2, :2], 10.0)
    np.testing.assert_array_equal(out[2, :], [[1, 2, 3]] * 4)
    np.testing.assert_array_equal(out[:, 2:].reshape(-1, 3), [[1, 2, 3]] * 6)


def test_pad_boxes_pads_with_label_minus_one_and_zero_boxes():
    boxes = tf.constant([[1, 2, 3, 4], [5, 6, 7, 8]], tf.float32)
    labels = tf.constant([2, 1], tf.int32)
    out_boxes, out_labels = pad_boxes(boxes, labels, 4)
    np.testing.assert_array_equal(out_boxes.numpy(), [[1, 2, 3, 4], [5, 6, 7, 8], [0, 0, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(out_labels.numpy(), [2, 1, -1, -1])
    assert out_labels.dtype == tf.int32


def test_pad_boxes_truncates_to_the_first_rows():
    boxes = tf.reshape(tf.range(20, dtype=tf.float32), [5, 4])
    out_boxes, out_labels = pad_boxes(boxes, tf.constant([1, 2, 3, 1, 2]), 3)
    np.testing.assert_array_equal(out_boxes.numpy(), boxes.numpy()[:3])
    np.testing.assert_array_equal(out_labels.numpy(), [1, 2, 3])


def test_pad_boxes_empty_and_exact():
    out_boxes, out_labels = pad_boxes(tf.zeros([0, 4]), tf.zeros([0], tf.int32), 2)
    np.testing.assert_array_equal(out_boxes.numpy(), np.zeros((2, 4)))
    np.testing.assert_array_equal(out_labels.numpy(), [-1, -1])
    out_boxes, out_labels = pad_boxes(tf.ones([2, 4]), tf.constant([3, 3]), 2)
    np.testing.assert_array_equal(out_labels.numpy(), [3, 3])


def test_pad_boxes_gives_static_shapes_in_a_function():
    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([None], tf.int32)])
    def run(boxes, labels):
        out = pad_boxes(boxes, labels, 6)
        assert out[0].shape == (6, 4) and out[1].shape == (6,)
        return out

    run(tf.zeros([9, 4]), tf.zeros([9], tf.int32))
