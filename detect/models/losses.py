"""Detection losses as plain tensor functions.

Shape shorthand: N images, M anchors per image, R sampled RoIs per image, K classes.
Sampled-label convention: 1 / 0 foreground / background, -1 not sampled (no loss).
"""

import tensorflow as tf


def smooth_l1(x, beta):
    """Elementwise smooth L1 (Huber with transition at `beta`): 0.5 x^2 / beta if |x| < beta.

    The papers' `sigma` is beta = 1 / sigma^2 (sigma 3 for the RPN -> beta 1/9; sigma 1 -> 1).
    """
    x = tf.abs(x)
    if beta <= 0:
        return x
    return tf.where(x < beta, 0.5 * x * x / beta, x - 0.5 * beta)


def rpn_losses(objectness, pred_deltas, labels, target_deltas, beta=1.0 / 9):
    """RPN objectness (binary cross entropy) and box (smooth L1) losses.

    Args:
      objectness: (N, M) logits.
      pred_deltas, target_deltas: (N, M, 4) encoded deltas.
      labels: (N, M) int32 sampled labels (1 fg, 0 bg, -1 not sampled).
    Both losses are normalized by the number of sampled anchors (as detectron2), so the
    box loss of an image without objects is 0 and its objectness loss is positive.
    """
    sampled = tf.cast(labels >= 0, tf.float32)
    fg = tf.cast(labels == 1, tf.float32)
    normalizer = tf.maximum(tf.reduce_sum(sampled), 1.0)
    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=fg, logits=objectness)
    cls_loss = tf.reduce_sum(bce * sampled) / normalizer
    box = tf.reduce_sum(smooth_l1(pred_deltas - target_deltas, beta), axis=-1)
    box_loss = tf.reduce_sum(box * fg) / normalizer
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
    sampled = tf.cast(labels >= 0, tf.float32)
    normalizer = tf.maximum(tf.reduce_sum(sampled), 1.0)
    safe_labels = tf.maximum(labels, 0)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe_labels, logits=class_logits)
    cls_loss = tf.reduce_sum(ce * sampled) / normalizer
    fg = tf.cast(labels > 0, tf.float32)
    # Deltas of the ground-truth class only; background rows pick class 1 and are masked.
    chosen = tf.gather(pred_deltas, tf.maximum(labels - 1, 0), axis=2, batch_dims=2)
    box = tf.reduce_sum(smooth_l1(chosen - target_deltas, beta), axis=-1)
    box_loss = tf.reduce_sum(box * fg) / normalizer
    return cls_loss, box_loss
