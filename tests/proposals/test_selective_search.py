import numpy as np
import pytest

from detect.errors import DetectError
from detect.proposals.selective_search import selective_search

# Solid rectangles (xyxy, continuous pixel coordinates) on a grey background.
RECTS = np.array([[20, 10, 70, 50], [60, 70, 110, 120], [8, 80, 40, 118]], np.float32)
COLORS = [(220, 30, 30), (20, 140, 40), (30, 30, 200)]


def _image(height=128, width=128, rects=RECTS):
    image = np.full((height, width, 3), 128, np.uint8)
    for (x1, y1, x2, y2), color in zip(rects.astype(int), COLORS):
        image[y1:y2, x1:x2] = color
    return image


def _iou(boxes, box):
    lt = np.maximum(boxes[:, :2], box[:2])
    rb = np.minimum(boxes[:, 2:], box[2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    return inter / (area + np.prod(box[2:] - box[:2]) - inter)


def _check_valid(boxes, height, width):
    assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
    assert np.all(boxes[:, 0] >= 0) and np.all(boxes[:, 1] >= 0)
    assert np.all(boxes[:, 2] <= width) and np.all(boxes[:, 3] <= height)
    assert np.all(boxes[:, 0] < boxes[:, 2]) and np.all(boxes[:, 1] < boxes[:, 3])
    assert len(np.unique(boxes, axis=0)) == len(boxes)


@pytest.mark.parametrize("mode", ["fast", "quality"])
def test_finds_each_rectangle(mode):
    boxes = selective_search(_image(), mode=mode)
    _check_valid(boxes, 128, 128)
    for rect in RECTS:
        assert _iou(boxes, rect).max() > 0.9, rect


def test_downscaled_search_returns_original_pixels():
    # 400x300 image searched at max_side 100 (factor 4): boxes come back x4, so the
    # rectangles (multiples of 4 here) are still found and the full-image box spans 400x300.
    rects = RECTS * np.float32(3)
    rects = np.round(rects / 4) * 4
    image = _image(384, 400, rects)
    boxes = selective_search(image, max_side=100)
    _check_valid(boxes, 384, 400)
    assert boxes[:, 2].max() > 100 and boxes[:, 3].max() > 100
    for rect in rects:
        assert _iou(boxes, rect).max() > 0.9, rect


def test_small_image_is_not_upscaled():
    # A 128 px image under max_side 500 is searched as is, so the first rectangle comes
    # back with its exact integer edges; an upscale to 500 px and back would turn edge 20
    # into round(20 * 500 / 128) * 128 / 500 = 78 * 0.256 = 19.968.
    boxes = selective_search(_image(), max_side=500)
    assert any(np.array_equal(b, RECTS[0]) for b in boxes)


def test_max_proposals_keeps_the_head_of_the_list():
    all_boxes = selective_search(_image(), max_proposals=None)
    assert len(all_boxes) > 3
    head = selective_search(_image(), max_proposals=3)
    np.testing.assert_array_equal(head, all_boxes[:3])


def test_same_seed_same_order():
    np.testing.assert_array_equal(selective_search(_image(), seed=3),
                                  selective_search(_image(), seed=3))


def test_min_size_removes_small_boxes():
    boxes = selective_search(_image(), min_size=45)
    sides = boxes[:, 2:] - boxes[:, :2]
    assert len(boxes) > 0 and np.all(sides >= 45)
    # The 32 px wide third rectangle can no longer be found on its own.
    assert _iou(boxes, RECTS[2]).max() < 0.9


@pytest.mark.parametrize("shape", [(1, 1, 3), (2, 3, 3), (5, 7, 3), (0, 4, 3)])
def test_tiny_images(shape):
    boxes = selective_search(np.zeros(shape, np.uint8))
    assert boxes.shape[1] == 4 and boxes.dtype == np.float32
    _check_valid(boxes, shape[0], shape[1])


def test_tiny_image_boxes_below_min_size_are_dropped():
    # A 1x1 image yields the single 1x1 box, smaller than min_size 4 px.
    assert selective_search(np.zeros((1, 1, 3), np.uint8)).shape == (0, 4)
    np.testing.assert_array_equal(
        selective_search(np.zeros((1, 1, 3), np.uint8), min_size=1), [[0, 0, 1, 1]])


def test_bad_mode():
    with pytest.raises(DetectError, match="mode 'slow'"):
        selective_search(_image(), mode="slow")


@pytest.mark.parametrize("kwargs", [{"max_side": 0}, {"max_proposals": 0}, {"min_size": -1}])
def test_bad_settings(kwargs):
    with pytest.raises(DetectError):
        selective_search(_image(), **kwargs)


@pytest.mark.parametrize("image", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8),
                                   np.zeros((8, 8, 3), np.float32)])
def test_bad_image(image):
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        selective_search(image)
