"""Greedy non-maximum suppression on padded, batched tensors.

Shapes: B images, N boxes per image, K classes. Boxes are xyxy in absolute pixels.
Semantics (those of tf.image's kernels, pinned by tests): boxes are visited by
descending score; a box is dropped when its IoU with an already kept box is
> iou_threshold, and boxes with score <= score_threshold are never kept.
"""

import tensorflow as tf

from detect.ops.boxes import as_boxes


def nms_padded(boxes, scores, max_output, iou_threshold, score_threshold=float("-inf")):
    """Per-image greedy NMS.

    Args:
        boxes: (B, N, 4) xyxy.
        scores: (B, N) float.
        max_output: largest number of boxes kept per image (Python int or scalar tensor).
        iou_threshold: boxes overlapping a kept box with IoU above this are dropped.
        score_threshold: boxes scoring at or below this are dropped.

    Returns:
        indices: (B, max_output) int32 into N, by descending score, padded with -1.
        valid: (B,) int32 number of kept boxes per image.
    """
    boxes = as_boxes(boxes)
    scores = tf.cast(tf.convert_to_tensor(scores), tf.float32)
    static_max_output = tf.get_static_value(max_output)
    if static_max_output is not None:
        static_max_output = int(static_max_output)
    max_output = tf.convert_to_tensor(max_output, tf.int32)
    iou_threshold = tf.convert_to_tensor(iou_threshold, tf.float32)
    score_threshold = tf.convert_to_tensor(score_threshold, tf.float32)

    # On CPU a loop of the exact single-image kernel is 1.2-5x faster than the batched
    # tiled tf.image.non_max_suppression_padded for max_output <= 1000 (B 1..8, N 2k..12k)
    # and at most ~2x slower at 2000; the tiled one also drops boxes whose coordinates
    # are all <= 0 and fails when N == 0.
    def one_image(inputs):
        image_boxes, image_scores = inputs
        kept = tf.image.non_max_suppression(
            image_boxes, image_scores, max_output, iou_threshold, score_threshold
        )
        valid = tf.size(kept)
        return tf.pad(kept, [[0, max_output - valid]], constant_values=-1), valid

    return tf.map_fn(
        one_image,
        (boxes, scores),
        fn_output_signature=(
            tf.TensorSpec([static_max_output], tf.int32),
            tf.TensorSpec([], tf.int32),
        ),
    )


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
    # reduce_max/min of an empty tensor is -inf/+inf: a span of 0 keeps offsets finite.
    has_boxes = tf.size(boxes) > 0
    span = tf.where(has_boxes, tf.reduce_max(boxes) - tf.reduce_min(boxes), 0.0) + 1.0
    classes = tf.convert_to_tensor(classes)
    offsets = tf.cast(classes, tf.float32) * span
    scores = tf.cast(tf.convert_to_tensor(scores), tf.float32)
    # -inf is never above any score threshold: padding rows cannot be kept.
    scores = tf.where(classes < 0, float("-inf"), scores)
    return nms_padded(boxes + offsets[..., None], scores, max_output, iou_threshold, score_threshold)


def multiclass_nms(boxes, scores, max_detections, iou_threshold, score_threshold=float("-inf")):
    """Per-class NMS, then the best `max_detections` over all classes per image.

    Gives the detections of `tf.image.combined_non_max_suppression` with
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
    scores = tf.cast(tf.convert_to_tensor(scores), tf.float32)
    batch, num_classes = tf.shape(scores)[0], tf.shape(scores)[2]
    flat_boxes = tf.reshape(boxes, [batch, -1, 4])  # (B, N*K, 4): pair n*K + k
    flat_scores = tf.reshape(scores, [batch, -1])
    flat_classes = tf.tile(tf.range(num_classes)[None, :], [batch, tf.shape(scores)[1]])
    indices, valid = batched_nms(
        flat_boxes, flat_scores, flat_classes, max_detections, iou_threshold, score_threshold
    )
    # Padding rows gather an appended zero row (N*K may be 0: nothing else to gather).
    padding = indices < 0
    indices = tf.where(padding, tf.shape(flat_scores)[1], indices)
    flat_boxes = tf.concat([flat_boxes, tf.zeros([batch, 1, 4])], axis=1)
    flat_scores = tf.concat([flat_scores, tf.zeros([batch, 1])], axis=1)
    return {
        "boxes": tf.gather(flat_boxes, indices, batch_dims=1),
        "scores": tf.gather(flat_scores, indices, batch_dims=1),
        "classes": tf.where(padding, -1, indices % num_classes),
        "valid": valid,
    }
