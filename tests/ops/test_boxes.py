import keras
import numpy as np
import pytest
import tensorflow as tf

from detect.ops import boxes as B


def test_area_hand_computed_and_degenerate():
    boxes = np.array(
        [
            [0, 0, 10, 20],  # 10 * 20 = 200
            [2.5, 1, 3, 5],  # 0.5 * 4 = 2
            [5, 5, 3, 10],  # width -2 counts as 0
            [1, 1, 1, 1],  # a point
        ],
        np.float32,
    )
    np.testing.assert_allclose(B.area(boxes).numpy(), [200, 2, 0, 0])


def test_area_batched_and_empty():
    assert B.area(np.zeros((0, 4))).shape == (0,)
    assert B.area(np.ones((2, 3, 4))).shape == (2, 3)


def test_pairwise_iou_hand_computed():
    boxes1 = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], np.float32)
    boxes2 = np.array(
        [
            [5, 5, 15, 15],  # intersection 5*5=25, union 100+100-25=175 -> 1/7
            [0, 0, 10, 10],  # identical -> 1
            [20, 20, 30, 30],  # disjoint -> 0
            [0, 0, 10, 5],  # inside: 50 / 100 = 0.5
        ],
        np.float32,
    )
    iou = B.pairwise_iou(boxes1, boxes2).numpy()
    assert iou.shape == (2, 4)
    np.testing.assert_allclose(iou[0], [1 / 7, 1, 0, 0.5], rtol=1e-6)
    np.testing.assert_allclose(iou[1], iou[0])


def test_pairwise_iou_zero_area_is_zero_not_nan():
    points = np.array([[3, 3, 3, 3]], np.float32)
    iou = B.pairwise_iou(points, points).numpy()
    assert iou.tolist() == [[0.0]]


def test_pairwise_iou_empty_inputs():
    some = np.ones((3, 4), np.float32)
    assert B.pairwise_iou(np.zeros((0, 4)), some).shape == (0, 3)
    assert B.pairwise_iou(some, np.zeros((0, 4))).shape == (3, 0)


def _random_boxes(rng, shape, size=100.0):
    xy = rng.uniform(0, size, shape + (2,))
    wh = rng.uniform(1, size / 2, shape + (2,))
    return np.concatenate([xy, xy + wh], axis=-1).astype(np.float32)


def test_batched_pairwise_iou_matches_per_image():
    rng = np.random.default_rng(0)
    boxes1, boxes2 = _random_boxes(rng, (3, 5)), _random_boxes(rng, (3, 7))
    batched = B.batched_pairwise_iou(boxes1, boxes2).numpy()
    assert batched.shape == (3, 5, 7)
    for i in range(3):
        np.testing.assert_allclose(batched[i], B.pairwise_iou(boxes1[i], boxes2[i]).numpy())
    assert B.batched_pairwise_iou(np.zeros((2, 0, 4)), boxes2[:2]).shape == (2, 0, 7)


def test_pairwise_iou_agrees_with_keras_compute_iou_on_valid_boxes():
    rng = np.random.default_rng(1)
    boxes1, boxes2 = _random_boxes(rng, (20,)), _random_boxes(rng, (30,))
    ours = B.pairwise_iou(boxes1, boxes2).numpy()
    theirs = keras.ops.convert_to_numpy(
        keras.utils.bounding_boxes.compute_iou(boxes1, boxes2, "xyxy")
    )
    assert ours.max() > 0.1  # some pairs overlap, so the comparison means something
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_clip_boxes_scalar_size():
    boxes = np.array([[-5, -1, 50, 30], [10, 10, 20, 20]], np.float32)
    clipped = B.clip_boxes(boxes, height=25, width=40).numpy()
    np.testing.assert_array_equal(clipped, [[0, 0, 40, 25], [10, 10, 20, 20]])


def test_clip_boxes_per_image_size():
    boxes = np.array([[[0, 0, 100, 100]], [[0, 0, 100, 100]]], np.float32)  # (2, 1, 4)
    heights = tf.constant([[30.0], [60.0]])  # (2, 1), broadcast against (2, 1)
    widths = tf.constant([[40.0], [80.0]])
    clipped = B.clip_boxes(boxes, heights, widths).numpy()
    np.testing.assert_array_equal(clipped, [[[0, 0, 40, 30]], [[0, 0, 80, 60]]])


def test_small_box_mask():
    boxes = np.array(
        [
            [0, 0, 4, 4],  # 4 x 4: kept at min_size 4
            [0, 0, 3.9, 10],  # width 3.9 < 4
            [0, 0, 10, 2],  # height 2 < 4
            [5, 5, 0, 20],  # negative width
        ],
        np.float32,
    )
    assert B.small_box_mask(boxes, 4).numpy().tolist() == [True, False, False, False]
    assert B.small_box_mask(np.zeros((0, 4)), 1).shape == (0,)


def test_xywh_conversions_hand_computed_and_round_trip():
    xyxy = np.array([[10, 20, 30, 60]], np.float32)
    xywh = B.xyxy_to_xywh(xyxy).numpy()
    np.testing.assert_array_equal(xywh, [[10, 20, 20, 40]])  # w = 30-10, h = 60-20
    np.testing.assert_array_equal(B.xywh_to_xyxy(xywh).numpy(), xyxy)


def test_cxcywh_conversions_hand_computed_and_round_trip():
    xyxy = np.array([[10, 20, 30, 60]], np.float32)
    cxcywh = B.xyxy_to_cxcywh(xyxy).numpy()
    np.testing.assert_array_equal(cxcywh, [[20, 40, 20, 40]])  # centre (10+10, 20+20)
    np.testing.assert_array_equal(B.cxcywh_to_xyxy(cxcywh).numpy(), xyxy)


@pytest.mark.parametrize(
    "convert", [B.xyxy_to_xywh, B.xywh_to_xyxy, B.xyxy_to_cxcywh, B.cxcywh_to_xyxy]
)
def test_conversions_keep_shape_and_give_float32(convert):
    assert convert(np.zeros((0, 4))).shape == (0, 4)
    out = convert(np.ones((2, 3, 4), np.int64))
    assert out.shape == (2, 3, 4) and out.dtype == tf.float32


def test_to_normalized_yxyx():
    boxes = np.array([[10, 20, 30, 60]], np.float32)
    normalized = B.to_normalized_yxyx(boxes, height=100, width=50).numpy()
    # [y1/H, x1/W, y2/H, x2/W] = [20/100, 10/50, 60/100, 30/50]
    np.testing.assert_allclose(normalized, [[0.2, 0.2, 0.6, 0.6]])
    per_image = B.to_normalized_yxyx(
        np.stack([boxes, boxes]), tf.constant([[100.0], [200.0]]), tf.constant([[50.0], [10.0]])
    ).numpy()
    np.testing.assert_allclose(per_image[1], [[0.1, 1.0, 0.3, 3.0]])


def test_ops_in_tf_function_with_dynamic_shapes():
    spec = tf.TensorSpec([None, 4], tf.float32)

    @tf.function(input_signature=[spec, spec])
    def run(boxes1, boxes2):
        return (
            B.pairwise_iou(boxes1, boxes2),
            B.clip_boxes(boxes1, 10, 10),
            B.xyxy_to_xywh(boxes1),
            B.small_box_mask(boxes1, 1.0),
        )

    iou, clipped, xywh, mask = run(tf.constant([[0.0, 0, 20, 20]]), tf.zeros((0, 4)))
    assert iou.shape == (1, 0)
    np.testing.assert_array_equal(clipped.numpy(), [[0, 0, 10, 10]])
    np.testing.assert_array_equal(xywh.numpy(), [[0, 0, 20, 20]])
    assert mask.numpy().tolist() == [True]


def test_ops_in_tf_data_map():
    boxes = np.array([[[0, 0, 4, 2]], [[1, 1, 2, 2]]], np.float32)
    dataset = tf.data.Dataset.from_tensor_slices(boxes)
    dataset = dataset.map(lambda b: (B.area(b), B.xyxy_to_cxcywh(b)))
    areas = [a.numpy().tolist() for a, _ in dataset]
    assert areas == [[8.0], [1.0]]


def test_numpy_forms_match_the_tf_forms():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 50, (7, 2))
    a = np.concatenate([xy, xy + rng.uniform(0, 30, (7, 2))], axis=1).astype(np.float32)
    b = np.concatenate([a[:3], [[0, 0, 0, 0], [5, 5, 5, 9]]]).astype(np.float32)  # zero-area rows
    np.testing.assert_allclose(B.pairwise_iou_np(a, b), B.pairwise_iou(a, b).numpy(), atol=1e-6)
    np.testing.assert_allclose(B.area_np(a), B.area(a).numpy(), rtol=1e-6)
    np.testing.assert_array_equal(B.valid_mask_np(b), B.valid_mask(b).numpy())
    np.testing.assert_allclose(B.clip_boxes_np(a, 20, 30), B.clip_boxes(a, 20, 30).numpy())
    np.testing.assert_allclose(B.scale_boxes_np(a, 2.0, 0.5), B.scale_boxes(a, 2.0, 0.5).numpy(), rtol=1e-6)


def test_numpy_iou_hand_computed_and_empty():
    # [0,0,10,10] vs [5,0,15,10]: intersection 5*10 = 50, union 100 + 100 - 50 = 150.
    assert B.pairwise_iou_np([[0, 0, 10, 10]], [[5, 0, 15, 10]])[0, 0] == pytest.approx(1 / 3)
    assert B.pairwise_iou_np(np.zeros((0, 4)), [[0, 0, 1, 1]]).shape == (0, 1)
    # A zero-area pair has union 0: IoU 0, not NaN.
    assert B.pairwise_iou_np([[1, 1, 1, 1]], [[1, 1, 1, 1]])[0, 0] == 0.0


def test_scale_boxes_per_image():
    # Boxes (2, 1, 4) with one (sx, sy) per image given as (2, 1).
    boxes = np.array([[[1, 2, 3, 4]], [[1, 2, 3, 4]]], np.float32)
    out = B.scale_boxes(boxes, np.array([[2.0], [1.0]]), np.array([[10.0], [1.0]])).numpy()
    np.testing.assert_allclose(out, [[[2, 20, 6, 40]], [[1, 2, 3, 4]]])


def test_numpy_iou_with_a_zero_box_by_hand():
    # [0, 0, 20, 20] vs [8, 0, 28, 20]: intersection 12 * 20 = 240, union 400 + 400 - 240 = 560;
    # vs the all-zero padding box: 0.
    iou = B.pairwise_iou_np(np.array([[0, 0, 20, 20.0]]), np.array([[8, 0, 28, 20.0], [0, 0, 0, 0.0]]))
    np.testing.assert_allclose(iou, [[240 / 560, 0.0]])


def test_scale_boxes_np_per_image():
    # (2, 1, 4) boxes, one (sx, sy) per image as (2, 1): image 0 x2 / x10, image 1 unchanged.
    boxes = np.array([[[1, 2, 3, 4]], [[1, 2, 3, 4]]], np.float32)
    out = B.scale_boxes_np(boxes, np.array([[2.0], [1.0]]), np.array([[10.0], [1.0]]))
    np.testing.assert_allclose(out, [[[2, 20, 6, 40]], [[1, 2, 3, 4]]])
