import numpy as np
import pytest
import tensorflow as tf

from detect.ops.nms import batched_nms, multiclass_nms, nms_padded


def _iou(box, others):
    inter_w = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    inter_h = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    inter = inter_w * inter_h
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / (area(box) + area(others) - inter)


def reference_nms(boxes, scores, max_output, iou_threshold, score_threshold):
    """Brute-force greedy NMS: by descending score, keep a box unless it overlaps a kept one."""
    kept = []
    for index in np.argsort(-scores, kind="stable"):
        if len(kept) == max_output or scores[index] <= score_threshold:
            break
        if not kept or np.all(_iou(boxes[index], boxes[kept]) <= iou_threshold):
            kept.append(index)
    return kept


def _random_boxes(rng, shape, canvas=200.0):
    xy = rng.uniform(0, canvas, shape + (2,))
    wh = rng.uniform(5, canvas / 3, shape + (2,))
    return np.concatenate([xy, xy + wh], -1).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_nms_matches_greedy_reference(seed):
    rng = np.random.default_rng(seed)
    boxes = _random_boxes(rng, (3, 150))
    scores = rng.uniform(size=(3, 150)).astype(np.float32)
    max_output, iou_threshold, score_threshold = 40, 0.5, 0.2
    indices, valid = nms_padded(boxes, scores, max_output, iou_threshold, score_threshold)
    assert indices.shape == (3, max_output) and indices.dtype == tf.int32
    for image in range(3):
        expected = reference_nms(
            boxes[image], scores[image], max_output, iou_threshold, score_threshold
        )
        assert valid[image] == len(expected)
        got = indices[image].numpy()
        assert got[: len(expected)].tolist() == expected
        assert np.all(got[len(expected) :] == -1)


def test_nms_threshold_semantics():
    boxes = np.array([[[0, 0, 10, 10], [0, 0, 10, 5], [50, 50, 60, 60]]], np.float32)
    scores = np.array([[0.9, 0.8, 0.5]], np.float32)
    # IoU(box 0, box 1) = 50 / 100 = 0.5 exactly: dropped only when IoU > threshold
    indices, _ = nms_padded(boxes, scores, 5, iou_threshold=0.5)
    assert indices.numpy().tolist() == [[0, 1, 2, -1, -1]]
    indices, _ = nms_padded(boxes, scores, 5, iou_threshold=0.49)
    assert indices.numpy().tolist() == [[0, 2, -1, -1, -1]]
    # a score equal to the threshold is dropped
    indices, valid = nms_padded(boxes, scores, 5, iou_threshold=0.9, score_threshold=0.5)
    assert indices.numpy().tolist() == [[0, 1, -1, -1, -1]] and valid.numpy().tolist() == [2]


def test_nms_empty_and_all_below_threshold():
    indices, valid = nms_padded(np.zeros((2, 0, 4)), np.zeros((2, 0)), 4, 0.5)
    assert indices.numpy().tolist() == [[-1] * 4] * 2 and valid.numpy().tolist() == [0, 0]
    boxes = _random_boxes(np.random.default_rng(0), (1, 10))
    indices, valid = nms_padded(boxes, np.full((1, 10), 0.1), 4, 0.5, score_threshold=0.5)
    assert indices.numpy().tolist() == [[-1] * 4] and valid.numpy().tolist() == [0]


def test_nms_in_tf_function_with_dynamic_shapes():
    @tf.function(
        input_signature=[tf.TensorSpec([None, None, 4], tf.float32), tf.TensorSpec([None, None])]
    )
    def run(boxes, scores):
        return nms_padded(boxes, scores, 6, 0.5)

    rng = np.random.default_rng(5)
    boxes, scores = _random_boxes(rng, (2, 30)), rng.uniform(size=(2, 30)).astype(np.float32)
    indices, valid = run(boxes, scores)
    assert indices.shape == (2, 6)
    eager_indices, _ = nms_padded(boxes, scores, 6, 0.5)
    np.testing.assert_array_equal(indices.numpy(), eager_indices.numpy())


def test_multiclass_keeps_overlapping_boxes_of_different_classes():
    box = [0, 0, 100, 100]
    shifted = [10, 0, 110, 100]  # IoU with box: 90*100 / (2*10000 - 9000) = 0.82
    boxes = np.array([[[box, box], [shifted, shifted]]], np.float32)  # (1, N=2, K=2, 4)
    scores = np.array([[[0.9, 0.0], [0.0, 0.8]]], np.float32)  # box: class 0, shifted: class 1
    out = multiclass_nms(boxes, scores, 4, iou_threshold=0.5, score_threshold=0.05)
    assert out["valid"].numpy().tolist() == [2]
    assert out["classes"].numpy().tolist() == [[0, 1, -1, -1]]
    np.testing.assert_allclose(out["scores"].numpy(), [[0.9, 0.8, 0, 0]])
    np.testing.assert_array_equal(out["boxes"].numpy()[0], [box, shifted, [0] * 4, [0] * 4])

    same_class = np.array([[[0.9, 0.0], [0.8, 0.0]]], np.float32)
    out = multiclass_nms(boxes, same_class, 4, iou_threshold=0.5, score_threshold=0.05)
    assert out["valid"].numpy().tolist() == [1]
    assert out["classes"].numpy().tolist() == [[0, -1, -1, -1]]


def test_multiclass_boxes_stay_absolute_and_coordinate_order_does_not_matter():
    rng = np.random.default_rng(3)
    boxes = _random_boxes(rng, (2, 40, 3), canvas=800.0)
    scores = rng.uniform(size=(2, 40, 3)).astype(np.float32)
    xyxy = multiclass_nms(boxes, scores, 20, 0.5, 0.1)
    yxyx = multiclass_nms(boxes[..., [1, 0, 3, 2]], scores, 20, 0.5, 0.1)
    np.testing.assert_array_equal(xyxy["classes"].numpy(), yxyx["classes"].numpy())
    np.testing.assert_array_equal(
        xyxy["boxes"].numpy(), yxyx["boxes"].numpy()[..., [1, 0, 3, 2]]
    )
    assert xyxy["boxes"].numpy().max() > 1.0  # pixels, not clipped to [0, 1]


def test_multiclass_matches_per_class_reference():
    rng = np.random.default_rng(4)
    boxes = _random_boxes(rng, (1, 60, 3))
    scores = rng.uniform(size=(1, 60, 3)).astype(np.float32)
    max_total = 12
    out = multiclass_nms(boxes, scores, max_total, 0.4, 0.3)
    candidates = []
    for k in range(3):
        kept = reference_nms(boxes[0, :, k], scores[0, :, k], max_total, 0.4, 0.3)
        candidates += [(scores[0, i, k], k, i) for i in kept]
    expected = sorted(candidates, reverse=True)[:max_total]
    valid = int(out["valid"][0])
    assert valid == len(expected)
    assert out["classes"].numpy()[0, :valid].tolist() == [k for _, k, _ in expected]
    np.testing.assert_allclose(out["scores"].numpy()[0, :valid], [s for s, _, _ in expected])
    np.testing.assert_array_equal(
        out["boxes"].numpy()[0, :valid], [boxes[0, i, k] for _, k, i in expected]
    )


def test_multiclass_empty_and_all_below_threshold():
    out = multiclass_nms(np.zeros((2, 0, 3, 4)), np.zeros((2, 0, 3)), 4, 0.5, 0.05)
    assert out["boxes"].shape == (2, 4, 4)
    assert out["valid"].numpy().tolist() == [0, 0]
    assert out["classes"].numpy().tolist() == [[-1] * 4] * 2
    boxes = _random_boxes(np.random.default_rng(0), (1, 5, 2))
    out = multiclass_nms(boxes, np.full((1, 5, 2), 0.01), 4, 0.5, 0.05)
    assert out["valid"].numpy().tolist() == [0]
    assert np.all(out["scores"].numpy() == 0) and np.all(out["boxes"].numpy() == 0)


def test_nms_empty_batch():
    indices, valid = nms_padded(np.zeros((0, 5, 4)), np.zeros((0, 5)), 3, 0.5)
    assert indices.shape == (0, 3) and valid.shape == (0,)


def test_multiclass_in_tf_function_with_dynamic_shapes():
    spec = [tf.TensorSpec([None, None, None, 4]), tf.TensorSpec([None, None, None])]

    @tf.function(input_signature=spec)
    def run(boxes, scores):
        return multiclass_nms(boxes, scores, 6, 0.5, 0.1)

    rng = np.random.default_rng(6)
    boxes, scores = _random_boxes(rng, (2, 30, 3)), rng.uniform(size=(2, 30, 3)).astype(np.float32)
    graph, eager = run(boxes, scores), multiclass_nms(boxes, scores, 6, 0.5, 0.1)
    assert graph["boxes"].shape == (2, 6, 4)
    for key in eager:
        np.testing.assert_array_equal(graph[key].numpy(), eager[key].numpy())


def test_batched_nms_classes_never_suppress_each_other():
    boxes = np.array([[
        [0, 0, 10, 10],  # 0: class 0, kept
        [0, 0, 10, 10],  # 1: class 1, the same box: kept (another class)
        [1, 0, 11, 10],  # 2: class 0, IoU with box 0 = 90 / 110 = 0.82: dropped
        [1, 0, 11, 10],  # 3: class 1, IoU with box 1 = 0.82: dropped
        [0, 0, 10, 10],  # 4: class -1 (padding): never kept, whatever its score
    ]], np.float32)
    scores = np.array([[0.9, 0.8, 0.7, 0.95, 0.99]], np.float32)
    classes = np.array([[0, 1, 0, 1, -1]])
    indices, valid = batched_nms(boxes, scores, classes, 5, 0.5)
    # Class 1 keeps box 3 (0.95) and drops box 1 (IoU 0.82 with it); class 0 keeps box 0.
    assert indices.numpy().tolist() == [[3, 0, -1, -1, -1]] and valid.numpy().tolist() == [2]


def test_batched_nms_offset_covers_negative_coordinates():
    # Coordinates span -100..10. An offset of max + 1 = 11 (torchvision's) would move the
    # class 1 box to [-89, -89, -9, -9], inside the class 0 box: IoU 80*80 / 110*110 = 0.53
    # > 0.5 would drop it. The offset is the span + 1 = 111: the classes never meet.
    boxes = np.array([[[-100, -100, 10, 10], [-100, -100, -20, -20]]], np.float32)
    indices, valid = batched_nms(boxes, np.array([[0.9, 0.8]]), np.array([[0, 1]]), 3, 0.5)
    assert indices.numpy().tolist() == [[0, 1, -1]] and valid.numpy().tolist() == [2]


def test_batched_nms_ties_keep_the_lower_index():
    box = [5, 5, 25, 25]
    boxes = np.array([[box, box, box, box]], np.float32)
    scores = np.full((1, 4), 0.5, np.float32)
    # Boxes 0 and 2 are class 0, 1 and 3 class 1; equal scores: lower index first, and
    # each class keeps its first box.
    indices, _ = batched_nms(boxes, scores, np.array([[0, 1, 0, 1]]), 4, 0.5)
    assert indices.numpy().tolist() == [[0, 1, -1, -1]]


def test_batched_nms_empty():
    indices, valid = batched_nms(np.zeros((2, 0, 4)), np.zeros((2, 0)), np.zeros((2, 0), np.int32), 3, 0.5)
    assert indices.numpy().tolist() == [[-1] * 3] * 2 and valid.numpy().tolist() == [0, 0]
    indices, valid = batched_nms(np.zeros((0, 4, 4)), np.zeros((0, 4)), np.zeros((0, 4), np.int32), 3, 0.5)
    assert indices.shape == (0, 3) and valid.shape == (0,)


def test_multiclass_ties_across_classes_are_ordered_by_prediction_then_class():
    box = [0, 0, 10, 10]
    boxes = np.array([[[box, box], [box, box]]], np.float32)  # (1, N=2, K=2, 4)
    scores = np.array([[[0.0, 0.6], [0.6, 0.6]]], np.float32)
    out = multiclass_nms(boxes, scores, 3, 0.5, 0.1)
    # Class 1: predictions 0 and 1 tie at 0.6 on the same box, the lower (0) is kept;
    # class 0: prediction 1. Order of equal scores: prediction 0 before 1.
    assert out["classes"].numpy().tolist() == [[1, 0, -1]]
    np.testing.assert_allclose(out["scores"].numpy(), [[0.6, 0.6, 0.0]])


def _integer_boxes(rng, shape):
    """Integer xyxy boxes on a 60 px canvas: many coincide or meet at exact IoUs."""
    xy = rng.integers(0, 40, shape + (2,))
    return np.concatenate([xy, xy + rng.integers(1, 20, shape + (2,))], -1).astype(np.float32)


@pytest.mark.parametrize("seed,max_detections,score_threshold", [(0, 5, 0.05), (1, 20, 0.05), (2, 50, 0.3), (3, 8, 0.0)])
def test_multiclass_equals_combined_non_max_suppression(seed, max_detections, score_threshold):
    """Same detections, in the same order, as tf.image.combined_non_max_suppression (max
    per class = max total), the per-class op used before, which does not convert to ONNX."""
    rng = np.random.default_rng(seed)
    boxes = _integer_boxes(rng, (2, 30, 4))
    scores = rng.uniform(size=(2, 30, 4)).astype(np.float32)  # no ties: see the next test
    ours = multiclass_nms(boxes, scores, max_detections, 0.5, score_threshold)
    theirs = tf.image.combined_non_max_suppression(
        boxes, scores, max_detections, max_detections, 0.5, score_threshold, pad_per_class=False, clip_boxes=False
    )
    assert ours["valid"].numpy().min() > 0
    np.testing.assert_array_equal(ours["valid"].numpy(), theirs[3].numpy())
    np.testing.assert_array_equal(ours["boxes"].numpy(), theirs[0].numpy())
    np.testing.assert_array_equal(ours["scores"].numpy(), theirs[1].numpy())
    valid = tf.sequence_mask(ours["valid"], max_detections)
    np.testing.assert_array_equal(ours["classes"].numpy(), tf.where(valid, tf.cast(theirs[2], tf.int32), -1))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multiclass_with_tied_scores_matches_per_class_reference(seed):
    """Scores in steps of 0.1 tie often. CombinedNonMaxSuppression visits equal scores in
    heap order (unspecified); this op's order is lower prediction first, then lower class,
    as the brute-force per-class greedy NMS below."""
    rng = np.random.default_rng(seed)
    boxes = _integer_boxes(rng, (1, 30, 4))
    scores = (rng.integers(0, 11, (1, 30, 4)) / 10).astype(np.float32)
    max_detections = 25
    out = multiclass_nms(boxes, scores, max_detections, 0.5, 0.05)
    candidates = []
    for k in range(4):
        kept = reference_nms(boxes[0, :, k], scores[0, :, k], max_detections, 0.5, 0.05)
        candidates += [(-scores[0, i, k], i, k) for i in kept]
    expected = sorted(candidates)[:max_detections]
    assert int(out["valid"][0]) == len(expected) == max_detections
    assert out["classes"].numpy()[0].tolist() == [k for _, _, k in expected]
    np.testing.assert_array_equal(out["boxes"].numpy()[0], [boxes[0, i, k] for _, i, k in expected])
    np.testing.assert_array_equal(out["scores"].numpy()[0], [-s for s, _, _ in expected])
