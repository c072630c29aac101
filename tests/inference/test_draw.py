import numpy as np
import pytest

from detect.inference.draw import PALETTE, class_color, draw_detections

NAMES = ["circle", "rectangle", "triangle"]


def _black(height=100, width=100):
    return np.zeros((height, width, 3), dtype=np.uint8)


def test_box_edges_have_the_class_colour():
    image = _black()
    out = draw_detections(image, [[10, 20, 50, 60]], [2], NAMES, scores=[0.93], thickness=1)
    color = class_color(2)
    # Box covers columns 10..49 and rows 20..59: edges at col 10, col 49, row 59.
    np.testing.assert_array_equal(out[40, 10], color)
    np.testing.assert_array_equal(out[40, 49], color)
    np.testing.assert_array_equal(out[59, 30], color)
    np.testing.assert_array_equal(out[40, 30], [0, 0, 0])  # inside untouched
    np.testing.assert_array_equal(out[70, 30], [0, 0, 0])  # below untouched
    np.testing.assert_array_equal(out[40, 51], [0, 0, 0])  # right of the box untouched
    assert out.dtype == np.uint8 and out.shape == image.shape


def test_tag_drawn_above_box_with_text():
    out = draw_detections(_black(), [[10, 40, 90, 80]], [1], NAMES, scores=[0.5], thickness=1)
    tag = out[:40, 10:90]
    is_class = (tag == class_color(1)).all(axis=2)
    assert is_class.sum() > 50  # the filled tag
    assert (~is_class & (tag != 0).any(axis=2)).sum() > 5  # text pixels on it
    without_score = draw_detections(_black(), [[10, 40, 90, 80]], [1], NAMES, thickness=1)
    # "circle 0.50" is longer than "circle": the tag is wider.
    widths = [np.flatnonzero((img[:40] != 0).any(axis=(0, 2))).size for img in (out, without_score)]
    assert widths[0] > widths[1]


def test_input_not_modified():
    image = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    before = image.copy()
    out = draw_detections(image, np.array([[5.0, 5.0, 40.0, 30.0]]), np.array([3]), NAMES,
                          scores=np.array([0.7]))
    np.testing.assert_array_equal(image, before)
    assert not np.array_equal(out, before)
    assert not np.shares_memory(out, image)


def test_empty_detections_return_an_equal_copy():
    image = _black(30, 40)
    out = draw_detections(image, np.zeros((0, 4), np.float32), np.zeros((0,), np.int32), NAMES,
                          scores=np.zeros((0,), np.float32))
    np.testing.assert_array_equal(out, image)
    assert out is not image


def test_padding_and_non_finite_rows_are_skipped():
    image = _black(50, 50)
    boxes = [[0, 0, 0, 0], [5, 5, float("nan"), 20]]
    out = draw_detections(image, boxes, [-1, 1], NAMES)
    np.testing.assert_array_equal(out, image)


def test_colours_differ_between_classes():
    assert len(set(PALETTE)) == 20
    assert class_color(1) != class_color(2)
    assert class_color(21) == class_color(1)  # the palette repeats after 20 classes
    out = draw_detections(_black(), [[10, 10, 40, 40], [60, 60, 90, 90]], [1, 2], NAMES,
                          thickness=1)
    np.testing.assert_array_equal(out[39, 25], class_color(1))
    np.testing.assert_array_equal(out[89, 75], class_color(2))


def test_boxes_partly_or_fully_outside_the_image():
    out = draw_detections(_black(50, 50), [[-10, -10, 30, 30], [40, 45, 80, 1e9]], [1, 3],
                          NAMES, thickness=1)
    # First box clipped to columns 0..29 and rows 0..29: right edge at col 29, bottom row 29.
    np.testing.assert_array_equal(out[20, 29], class_color(1))
    np.testing.assert_array_equal(out[29, 15], class_color(1))
    # Second box clipped to columns 40..49, rows 45..49: left edge at col 40.
    np.testing.assert_array_equal(out[47, 40], class_color(3))
    outside = draw_detections(_black(50, 50), [[60, 60, 80, 80]], [1], NAMES)
    np.testing.assert_array_equal(outside, _black(50, 50))


def test_auto_thickness_grows_with_image_size():
    def line_width(size):
        out = draw_detections(_black(size, size), [[10, 10, size - 10, size - 10]], [1], NAMES)
        column = size // 2
        return int((out[size // 2:, column] == class_color(1)).all(axis=1).sum())

    assert line_width(100) == 1
    assert line_width(1200) > 2  # (1200 + 1200) / 600 = 4 px


def test_unknown_label_shows_number_and_bad_inputs_raise():
    out = draw_detections(_black(), [[20, 40, 60, 80]], [7], NAMES, thickness=1)
    np.testing.assert_array_equal(out[79, 40], class_color(7))
    with pytest.raises(ValueError, match="uint8"):
        draw_detections(np.zeros((10, 10), np.uint8), [], [], NAMES)
    with pytest.raises(ValueError, match="same length"):
        draw_detections(_black(), [[0, 0, 5, 5]], [1, 2], NAMES)


def test_colors_override_the_class_colour_per_box():
    # Two boxes of the same class, drawn in the colours given (e.g. gt green, detection red).
    out = draw_detections(_black(), [[10, 20, 50, 60], [60, 20, 90, 60]], [1, 1], NAMES,
                          thickness=1, colors=[(0, 200, 0), (220, 0, 0)])
    np.testing.assert_array_equal(out[40, 10], [0, 200, 0])  # left edge of box 1
    np.testing.assert_array_equal(out[40, 60], [220, 0, 0])  # left edge of box 2
    with pytest.raises(ValueError, match="colors"):
        draw_detections(_black(), [[10, 20, 50, 60]], [1], colors=[])
