"""Greedy non-maximum suppression on padded, batched tensors.

Shapes: B images, N boxes per image, K classes. Boxes are xyxy in absolute pixels.
Semantics (those of TensorFlow's NonMaxSuppression kernel, pinned by tests): boxes are visited by
descending score (equal scores: lower index first); a box is dropped when its IoU with an already
kept box is > iou_threshold (boxes of zero area overlap nothing; either corner order is the same
box), and boxes with score <= score_threshold are never kept.
"""

from keras import ops

from detect.ops import dispatch
from detect.ops.boxes import as_boxes, batched_pairwise_iou


def greedy_nms_padded(boxes, scores, max_output, iou_threshold, score_threshold=float("-inf")):
    """`nms_padded` in keras.ops with static shapes (any backend, jit-compilable).

    One loop step per output slot: the best remaining box is kept and every box
    overlapping it by IoU > iou_threshold (itself included) is removed, so the cost is
    O(max_output x N) with O(N) memory per image.
    """
    boxes = as_boxes(boxes)
    # Either corner order is one box, as in TensorFlow's kernel.
    boxes = ops.concatenate([ops.minimum(boxes[..., :2], boxes[..., 2:]), ops.maximum(boxes[..., :2], boxes[..., 2:])],
                            axis=-1)
    scores = ops.cast(ops.convert_to_tensor(scores), "float32")
    max_output = int(max_output)
    neg_inf = float("-inf")
    # Boxes at or below the threshold are never kept (TensorFlow's kernel does the same).
    scores = ops.where(scores > score_threshold, scores, neg_inf)
    slots = ops.arange(max_output, dtype="int32")[None, :]
    batch = ops.shape(scores)[0]
    indices = ops.full((batch, max_output), -1, dtype="int32")
    count = ops.zeros((batch,), dtype="int32")
    if ops.shape(scores)[1] == 0:
        return indices, count

    def step(slot, state):
        remaining, indices, count = state
        best = ops.cast(ops.argmax(remaining, axis=1), "int32")  # ties: lower index first
        alive = ops.take_along_axis(remaining, best[:, None], axis=1)[:, 0] > neg_inf
        best_box = ops.take_along_axis(boxes, best[:, None, None] * ops.ones((1, 1, 4), "int32"), axis=1)
        overlap = batched_pairwise_iou(best_box, boxes)[:, 0, :]  # (B, N)
        is_best = ops.arange(ops.shape(remaining)[1], dtype="int32")[None, :] == best[:, None]
        removed = ops.logical_and(alive[:, None], ops.logical_or(overlap > iou_threshold, is_best))
        remaining = ops.where(removed, neg_inf, remaining)
        indices = ops.where(ops.logical_and(slots == slot, alive[:, None]), best[:, None], indices)
        return remaining, indices, count + ops.cast(alive, "int32")

    _, indices, count = ops.fori_loop(0, max_output, step, (scores, indices, count))
    return indices, count


def nms_padded(boxes, scores, max_output, iou_threshold, score_threshold=float("-inf")):
    """Per-image greedy NMS.

    Args:
        boxes: (B, N, 4) xyxy.
        scores: (B, N) float.
        max_output: largest number of boxes kept per image (Python int: the static
            output size).
        iou_threshold: boxes overlapping a kept box with IoU above this are dropped.
        score_threshold: boxes scoring at or below this are dropped.

    Returns:
        indices: (B, max_output) int32 into N, by descending score, padded with -1.
        valid: (B,) int32 number of kept boxes per image.
    """
    boxes = as_boxes(boxes)
    scores = ops.cast(ops.convert_to_tensor(scores), "float32")
    return dispatch.nms_padded(boxes, scores, int(max_output), float(iou_threshold), float(score_threshold),
                               portable=greedy_nms_padded)


def batched_nms(boxes, scores, classes, max_output, iou_threshold, score_threshold=float("-inf")):
    """Greedy NMS in which boxes of different classes never suppress each other.

    Class-offset form (torchvision's `batched_nms`): every box is shifted along both axes
    by class x (coordinate span + 1), so boxes of different classes cannot overlap, and
    one single-class NMS runs over all classes at once. It uses only the plain NMS kernel
    (ONNX NonMaxSuppression, unlike per-class CombinedNonMaxSuppression). Integer pixel
    coordinates stay exact in float32 while class x span < 2**24.

    Args:
        boxes: (B, N, 4) xyxy.
        scores: (B, N) float.
        classes: (B, N) int; a box only competes with boxes of its own class. Rows of
            class -1 are padding and are never kept.
        max_output, iou_threshold, score_threshold: as `nms_padded`.

    Returns:
        indices: (B, max_output) int32 into N, by descending score (ties: lower index
        first), padded with -1; valid: (B,) int32 number of kept boxes per image.
    """
    boxes = as_boxes(boxes)
    # The max / min of an empty tensor are undefined: a span of 0 keeps offsets finite.
    span = ops.max(boxes, initial=0.0) - ops.min(boxes, initial=0.0) + 1.0
    classes = ops.convert_to_tensor(classes)
    offsets = ops.cast(classes, "float32") * span
    scores = ops.cast(ops.convert_to_tensor(scores), "float32")
    # -inf is never above any score threshold: padding rows cannot be kept.
    scores = ops.where(classes < 0, float("-inf"), scores)
    return nms_padded(boxes + offsets[..., None], scores, max_output, iou_threshold, score_threshold)


def multiclass_nms(boxes, scores, max_detections, iou_threshold, score_threshold=float("-inf")):
    """Per-class NMS, then the best `max_detections` over all classes per image.

    Gives the detections of TensorFlow's `combined_non_max_suppression` with
    max_output_size_per_class = max_total_size = max_detections (pinned by tests), as one
    class-offset NMS (`batched_nms`) over the N x K (box, class) pairs, which exports to
    ONNX. Equal because greedy NMS of one class does not depend on other classes' boxes,
    and the first `max_detections` survivors overall hold at most that many of any class.

    Args:
        boxes: (B, N, K, 4) xyxy, one box per class for each of the N predictions.
        scores: (B, N, K) float; column k scores class k (drop the background column
            before calling if it should not be detected).
        max_detections: boxes kept per image (Python int; fixes the output size).
        iou_threshold: within one class, boxes overlapping a kept box with IoU above
            this are dropped; boxes of different classes never suppress each other.
        score_threshold: boxes scoring at or below this are dropped.

    Returns:
        dict with boxes (B, max_detections, 4) xyxy, scores (B, max_detections),
        classes (B, max_detections) int32 in 0..K-1, valid (B,) int32. Rows past `valid`
        are padding: box 0, score 0, class -1. Rows are sorted by descending score
        (equal scores: lower prediction index n first, then lower class).
    """
    boxes = as_boxes(boxes)
    scores = ops.cast(ops.convert_to_tensor(scores), "float32")
    batch, num_predictions, num_classes = ops.shape(scores)
    flat_boxes = ops.reshape(boxes, (batch, -1, 4))  # (B, N*K, 4): pair n*K + k
    flat_scores = ops.reshape(scores, (batch, -1))
    flat_classes = ops.tile(ops.arange(num_classes, dtype="int32")[None, :], (batch, num_predictions))
    indices, valid = batched_nms(
        flat_boxes, flat_scores, flat_classes, max_detections, iou_threshold, score_threshold
    )
    # Padding rows gather an appended zero row (N*K may be 0: nothing else to gather).
    padding = indices < 0
    indices = ops.where(padding, ops.shape(flat_scores)[1], indices)
    flat_boxes = ops.concatenate([flat_boxes, ops.zeros((batch, 1, 4))], axis=1)
    flat_scores = ops.concatenate([flat_scores, ops.zeros((batch, 1))], axis=1)
    return {
        "boxes": ops.take_along_axis(flat_boxes, indices[..., None], axis=1),
        "scores": ops.take_along_axis(flat_scores, indices, axis=1),
        "classes": ops.where(padding, -1, indices % num_classes),
        "valid": valid,
    }
