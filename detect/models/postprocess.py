"""Detection postprocessing shared by every detector: per-class decode, clip, score
threshold, per-class NMS (as one class-offset NMS, which exports to ONNX), top-k, and
rescaling from canvas pixels to original image pixels.

Shape shorthand: N images, P RoIs per image, K classes, D = max detections per image.
"""

from keras import ops

from detect.ops.boxes import clip_boxes, scale_boxes, small_box_mask
from detect.ops.nms import multiclass_nms


def postprocess_detections(scores, deltas, rois, roi_valid, image_shape, scale, *, coder, score_threshold,
                           nms_iou, max_detections, min_box_size=0.0):
    """Turn per-class scores and box deltas into final detections.

    Args:
      scores: (N, P, K) class scores in [0, 1] (softmax without background, or sigmoid of
        SVM margins); deltas: (N, P, K, 4); rois: (N, P, 4) xyxy canvas pixels.
      roi_valid: (N, P) bool; padding RoIs never become detections.
      image_shape: (N, 2) content (height, width) in the canvas, for clipping.
      scale: (N, 2) (sy, sx) from original image to canvas pixels, or None for 1.
      min_box_size: boxes narrower or lower than this many canvas pixels after clipping are
        dropped (torchvision: 0.01); 0 keeps all.
    Returns:
      dict boxes (N, D, 4) xyxy in original image pixels, scores (N, D),
      labels (N, D) int32 in 1..K (0 in padding rows), num_detections (N,) int32.
    """
    num_classes = deltas.shape[2]
    scores = ops.where(roi_valid[..., None], scores, 0.0)
    anchors = ops.repeat(rois[:, :, None, :], num_classes, axis=2)
    boxes = coder.decode(deltas, anchors)
    shape = ops.cast(image_shape, boxes.dtype)
    boxes = clip_boxes(boxes, shape[:, 0, None, None], shape[:, 1, None, None])
    if min_box_size > 0:
        scores = ops.where(small_box_mask(boxes, float(min_box_size)), scores, 0.0)
    result = multiclass_nms(
        boxes, scores, max_detections=max_detections, iou_threshold=nms_iou, score_threshold=score_threshold
    )
    scale = ops.ones_like(shape) if scale is None else ops.cast(scale, boxes.dtype)
    out_boxes = scale_boxes(result["boxes"], 1.0 / scale[:, 1, None], 1.0 / scale[:, 0, None])
    valid = ops.arange(max_detections, dtype="int32")[None, :] < ops.cast(result["valid"], "int32")[:, None]
    return {
        "boxes": ops.where(valid[..., None], out_boxes, 0.0),
        "scores": ops.where(valid, result["scores"], 0.0),
        "labels": ops.cast(ops.where(valid, result["classes"] + 1, 0), "int32"),
        "num_detections": ops.cast(result["valid"], "int32"),
    }
