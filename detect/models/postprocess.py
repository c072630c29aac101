"""Detection postprocessing: per-class decode, clip, score threshold, per-class NMS, top-k,
and rescaling from canvas pixels back to original image pixels.

Shape shorthand: N images, P RoIs per image, K classes, D = max detections per image.
"""

import tensorflow as tf

from detect.ops.boxes import clip_boxes
from detect.ops.nms import multiclass_nms


def postprocess_detections(
    class_logits,
    deltas,
    rois,
    roi_valid,
    image_shape,
    scale,
    *,
    coder,
    score_threshold,
    nms_iou,
    max_detections,
):
    """Turn head outputs into final detections.

    Args:
      class_logits: (N, P, K + 1); deltas: (N, P, K, 4); rois: (N, P, 4) xyxy canvas pixels.
      roi_valid: (N, P) bool; padding RoIs never become detections.
      image_shape: (N, 2) content (height, width) in the canvas, for clipping.
      scale: (N, 2) (sy, sx) from original image to canvas pixels.
    Returns:
      dict boxes (N, D, 4) xyxy in original image pixels, scores (N, D),
      labels (N, D) int32 in 1..K (0 in padding rows), num_detections (N,) int32.
    """
    num_classes = deltas.shape[2]
    probs = tf.nn.softmax(class_logits, axis=-1)[..., 1:]
    probs = tf.where(roi_valid[..., None], probs, 0.0)
    anchors = tf.repeat(rois[:, :, None, :], num_classes, axis=2)
    boxes = coder.decode(deltas, anchors)
    height = tf.cast(image_shape[:, 0], boxes.dtype)[:, None, None]
    width = tf.cast(image_shape[:, 1], boxes.dtype)[:, None, None]
    boxes = clip_boxes(boxes, height, width)
    result = multiclass_nms(
        boxes,
        probs,
        max_per_class=max_detections,
        max_total=max_detections,
        iou_threshold=nms_iou,
        score_threshold=score_threshold,
    )
    sy = tf.cast(scale[:, 0], boxes.dtype)[:, None]
    sx = tf.cast(scale[:, 1], boxes.dtype)[:, None]
    out_boxes = tf.stack(
        [
            result["boxes"][..., 0] / sx,
            result["boxes"][..., 1] / sy,
            result["boxes"][..., 2] / sx,
            result["boxes"][..., 3] / sy,
        ],
        axis=-1,
    )
    valid = tf.sequence_mask(result["valid"], max_detections)
    labels = tf.where(valid, result["classes"] + 1, 0)
    return {
        "boxes": tf.where(valid[..., None], out_boxes, 0.0),
        "scores": tf.where(valid, result["scores"], 0.0),
        "labels": tf.cast(labels, tf.int32),
        "num_detections": tf.cast(result["valid"], tf.int32),
    }
