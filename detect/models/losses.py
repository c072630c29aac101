"""Detection losses as plain tensor functions.

Shape shorthand: N images, M anchors per image, R sampled RoIs per image, K classes.
Sampled-label convention: 1 / 0 foreground / background, -1 not sampled (no loss).
"""

from keras import ops


def smooth_l1(x, beta):
    """Elementwise smooth L1 (Huber with transition at `beta`): 0.5 x^2 / beta if |x| < beta.

    The papers' `sigma` is beta = 1 / sigma^2 (sigma 3 for the RPN -> beta 1/9; sigma 1 -> 1).
    """
    x = ops.abs(x)
    if beta <= 0:
        return x
    return ops.where(x < beta, 0.5 * x * x / beta, x - 0.5 * beta)


def rpn_losses(objectness, pred_deltas, labels, target_deltas, beta=1.0 / 9):
    """RPN objectness (binary cross entropy) and box (smooth L1) losses.

    Args:
      objectness: (N, M) logits.
      pred_deltas, target_deltas: (N, M, 4) encoded deltas.
      labels: (N, M) int32 sampled labels (1 fg, 0 bg, -1 not sampled).
    Both losses are normalized by the number of sampled anchors (as detectron2), so the
    box loss of an image without objects is 0 and its objectness loss is positive.
    """
    sampled = ops.cast(labels >= 0, "float32")
    fg = ops.cast(labels == 1, "float32")
    normalizer = ops.maximum(ops.sum(sampled), 1.0)
    bce = ops.binary_crossentropy(fg, ops.cast(objectness, "float32"), from_logits=True)
    cls_loss = ops.sum(bce * sampled) / normalizer
    box = ops.sum(smooth_l1(pred_deltas - target_deltas, beta), axis=-1)
    box_loss = ops.sum(box * fg) / normalizer
    return cls_loss, box_loss


def detection_losses(class_logits, pred_deltas, labels, target_deltas, beta=1.0):
    """Fast R-CNN head losses: softmax cross entropy and class-specific smooth L1.

    Args:
      class_logits: (N, R, K + 1) logits, column 0 is background.
      pred_deltas: (N, R, K, 4) per-class deltas (class k at index k - 1).
      labels: (N, R) int32 in 0..K, -1 for RoIs that take no part in the loss.
      target_deltas: (N, R, 4) encoded deltas towards the matched ground truth.
    Both losses are normalized by the number of sampled RoIs.
    """
    sampled = ops.cast(labels >= 0, "float32")
    normalizer = ops.maximum(ops.sum(sampled), 1.0)
    safe_labels = ops.maximum(labels, 0)
    ce = ops.sparse_categorical_crossentropy(safe_labels, ops.cast(class_logits, "float32"), from_logits=True)
    cls_loss = ops.sum(ce * sampled) / normalizer
    fg = ops.cast(labels > 0, "float32")
    # Deltas of the ground-truth class only; background rows pick class 1 and are masked.
    index = ops.maximum(labels - 1, 0)[:, :, None, None]  # (N, R, 1, 1) into the K axis
    chosen = ops.take_along_axis(pred_deltas, ops.repeat(index, 4, axis=3), axis=2)[:, :, 0]
    box = ops.sum(smooth_l1(chosen - target_deltas, beta), axis=-1)
    box_loss = ops.sum(box * fg) / normalizer
    return cls_loss, box_loss
