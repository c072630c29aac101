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


def multiclass_nms(
    boxes, scores, max_per_class, max_total, iou_threshold, score_threshold=float("-inf")
):
    """NMS run independently per class, then the best `max_total` over classes per image.

    Args:
        boxes: (B, N, K, 4) xyxy, one box per class for each of the N predictions.
        scores: (B, N, K) float; column k scores class k (drop the background column
            before calling if it should not be detected).
        max_per_class: boxes kept per class and image before merging (Python int).
        max_total: boxes kept per image (Python int; fixes the output size).
        iou_threshold: within one class, boxes overlapping a kept box with IoU above
            this are dropped; boxes of different classes never suppress each other.
        score_threshold: boxes scoring at or below this are dropped.

    Returns:
        dict with boxes (B, max_total, 4) xyxy, scores (B, max_total),
        classes (B, max_total) int32 in 0..K-1, valid (B,) int32. Rows past `valid` are
        padding: box 0, score 0, class -1. Rows are sorted by descending score.
    """
    boxes = as_boxes(boxes)
    scores = tf.cast(tf.convert_to_tensor(scores), tf.float32)
    # The kernel computes IoU from min/max of each coordinate pair, so xyxy works as
    # well as its documented yxyx; clip_boxes=False keeps absolute pixels unclipped.
    nmsed_boxes, nmsed_scores, nmsed_classes, valid = tf.image.combined_non_max_suppression(
        boxes,
        scores,
        max_output_size_per_class=max_per_class,
        max_total_size=max_total,
        iou_threshold=iou_threshold,
        score_threshold=score_threshold,
        pad_per_class=False,
        clip_boxes=False,
    )
    padding = tf.range(tf.shape(nmsed_scores)[1])[None, :] >= valid[:, None]
    classes = tf.where(padding, -1, tf.cast(nmsed_classes, tf.int32))
    return {
        "boxes": tf.where(padding[..., None], 0.0, nmsed_boxes),
        "scores": tf.where(padding, 0.0, nmsed_scores),
        "classes": classes,
        "valid": valid,
    }
