"""Training targets: RPN labels/deltas for anchors, sampled RoIs with labels/deltas.

Shape shorthand (one image): M anchors, G padded ground-truth boxes (label -1 = padding),
P proposals, R sampled RoIs. All boxes are (.., 4) xyxy in pixels of the padded canvas.
Labels: 0 background, 1..K classes, -1 ignored / not sampled.
"""

import tensorflow as tf

from detect.ops.boxes import pairwise_iou
from detect.ops.matching import sample_balanced


def _with_dummy_gt(gt_boxes, gt_labels):
    # gather on an empty gt set is undefined; a padding row (label -1) is never matched.
    if gt_boxes.shape[0] == 0:
        gt_boxes = tf.zeros([1, 4], gt_boxes.dtype)
        gt_labels = -tf.ones([1], gt_labels.dtype)
    return gt_boxes, gt_labels


def _masked_iou(gt_boxes, gt_labels, boxes):
    """(G, X) IoU with rows of padded ground truth set to -1 (never matched)."""
    iou = pairwise_iou(gt_boxes, boxes)
    return tf.where((gt_labels > 0)[:, None], iou, -1.0)


def rpn_targets(
    anchors,
    gt_boxes,
    gt_labels,
    image_shape,
    *,
    matcher,
    coder,
    num_samples,
    positive_fraction,
    ignore_border,
):
    """RPN targets for one image.

    Args:
      anchors: (M, 4) xyxy.
      gt_boxes: (G, 4) xyxy; gt_labels: (G,) int32, -1 rows are padding.
      image_shape: (2,) int32 (height, width) of the image content inside the canvas.
      matcher: Matcher(0.7, 0.3, allow_low_quality_matches=True).
      coder: BoxCoder for RPN deltas.
      ignore_border: anchors not fully inside the image content take no part (paper).
    Returns:
      labels (M,) int32 sampled 1 / 0 / -1, target_deltas (M, 4) float32.
    """
    gt_boxes, gt_labels = _with_dummy_gt(gt_boxes, gt_labels)
    matched, labels = matcher(_masked_iou(gt_boxes, gt_labels, anchors))
    if ignore_border:
        height = tf.cast(image_shape[0], anchors.dtype)
        width = tf.cast(image_shape[1], anchors.dtype)
        inside = (
            (anchors[:, 0] >= 0)
            & (anchors[:, 1] >= 0)
            & (anchors[:, 2] <= width)
            & (anchors[:, 3] <= height)
        )
        labels = tf.where(inside, labels, -1)
    labels = sample_balanced(labels, num_samples, positive_fraction)
    target_deltas = coder.encode(tf.gather(gt_boxes, matched), anchors)
    target_deltas = tf.where((labels == 1)[:, None], target_deltas, 0.0)
    return labels, target_deltas


def _rank(values):
    """Rank of each entry in descending order (0 = largest)."""
    order = tf.argsort(values, direction="DESCENDING", stable=True)
    return tf.math.invert_permutation(order)


def roi_targets(
    proposals,
    proposal_valid,
    gt_boxes,
    gt_labels,
    *,
    matcher,
    coder,
    num_samples,
    positive_fraction,
):
    """Sample a fixed number of RoIs for one image and give them targets.

    The ground-truth boxes join the proposals as candidates (as in all reference
    implementations), so every object has at least one foreground RoI. Foreground:
    IoU >= fg threshold of `matcher`; background: below it. At most
    num_samples * positive_fraction foreground; background fills the rest; when there are
    too few of both, other candidates fill the slots with label -1 (no loss), so R is
    always `num_samples` and the graph shape static.

    Args:
      proposals: (P, 4) xyxy; proposal_valid: (P,) bool (False for padding rows).
      gt_boxes: (G, 4) xyxy; gt_labels: (G,) int32 1..K, -1 padding.
    Returns:
      rois (R, 4), labels (R,) int32 in -1..K, target_deltas (R, 4).
    """
    gt_boxes, gt_labels = _with_dummy_gt(gt_boxes, gt_labels)
    candidates = tf.concat([proposals, gt_boxes], axis=0)
    valid = tf.concat([proposal_valid, gt_labels > 0], axis=0)
    matched, match_labels = matcher(_masked_iou(gt_boxes, gt_labels, candidates))
    fg = (match_labels == 1) & valid
    bg = (match_labels == 0) & valid

    u = tf.random.uniform(tf.shape(valid))
    quota = int(num_samples * positive_fraction)
    fg_chosen = fg & (_rank(tf.where(fg, u, -1.0)) < quota)
    key = tf.where(fg_chosen, 3.0 + u, tf.where(bg, 2.0 + u, tf.where(valid, 1.0 + u, u)))
    num_candidates = tf.shape(key)[0]
    # top_k needs k <= length: pad keys with -1 so short candidate lists still give R rows.
    key = tf.pad(key, [[0, tf.maximum(num_samples - num_candidates, 0)]], constant_values=-1.0)
    index = tf.math.top_k(key, k=num_samples).indices
    in_range = index < num_candidates
    index = tf.minimum(index, num_candidates - 1)
    picked_fg = tf.gather(fg_chosen, index) & in_range
    picked_bg = tf.gather(bg, index) & in_range

    matched_picked = tf.gather(matched, index)
    labels = tf.where(picked_fg, tf.gather(gt_labels, matched_picked), tf.where(picked_bg, 0, -1))
    rois = tf.gather(candidates, index)
    target_deltas = coder.encode(tf.gather(gt_boxes, matched_picked), rois)
    target_deltas = tf.where((labels > 0)[:, None], target_deltas, 0.0)
    return rois, tf.cast(labels, tf.int32), target_deltas


def rpn_targets_batch(anchors, gt_boxes, gt_labels, image_shape, **kwargs):
    """rpn_targets over a batch: gt (N, G, 4) / (N, G), image_shape (N, 2) -> (N, M), (N, M, 4)."""
    num_anchors = anchors.shape[0]

    def one(args):
        return rpn_targets(anchors, args[0], args[1], args[2], **kwargs)

    return tf.map_fn(
        one,
        (gt_boxes, gt_labels, image_shape),
        fn_output_signature=(
            tf.TensorSpec([num_anchors], tf.int32),
            tf.TensorSpec([num_anchors, 4], tf.float32),
        ),
    )


def roi_targets_batch(proposals, proposal_valid, gt_boxes, gt_labels, **kwargs):
    """roi_targets over a batch: (N, P, 4), (N, P), (N, G, 4), (N, G) -> (N, R, ...)."""
    num_samples = kwargs["num_samples"]

    def one(args):
        return roi_targets(args[0], args[1], args[2], args[3], **kwargs)

    return tf.map_fn(
        one,
        (proposals, proposal_valid, gt_boxes, gt_labels),
        fn_output_signature=(
            tf.TensorSpec([num_samples, 4], tf.float32),
            tf.TensorSpec([num_samples], tf.int32),
            tf.TensorSpec([num_samples, 4], tf.float32),
        ),
    )
