"""Matching predictions (anchors, proposals) to ground truth, and balanced sampling.

Shapes: G ground-truth boxes (rows), M predictions (columns).
Match labels: 1 foreground, 0 background, -1 ignored.
"""

import keras
import tensorflow as tf

from detect.errors import DetectError

FOREGROUND = 1
BACKGROUND = 0
IGNORE = -1


class Matcher:
    """Assigns each prediction its best ground truth and a fg / bg / ignore label.

    A prediction whose best IoU is >= `high_threshold` is foreground, < `low_threshold`
    background, and in between ignored. With `allow_low_quality_matches`, for every
    valid ground truth the prediction(s) of highest IoU with it (all tied ones) are
    made foreground too, so no object is left without a positive (Faster R-CNN RPN).

    Typical settings: RPN Matcher(0.7, 0.3, True); RoI head Matcher(0.5, 0.5, False)
    (foreground IoU >= 0.5, background [0, 0.5)).
    """

    def __init__(self, high_threshold, low_threshold, allow_low_quality_matches=True):
        if low_threshold > high_threshold:
            raise DetectError(
                f"matcher low_threshold {low_threshold} is above high_threshold {high_threshold}"
            )
        self.high_threshold = float(high_threshold)
        self.low_threshold = float(low_threshold)
        self.allow_low_quality_matches = bool(allow_low_quality_matches)

    def __call__(self, iou):
        """Matches the columns of `iou` to its rows.

        Args:
            iou: (G, M) float IoU of ground truth x predictions; rows of padded or
                invalid ground truth must be set to -1 by the caller.

        Returns:
            matched_gt_index: (M,) int32 row of the best ground truth per prediction
                (0 when there is no valid ground truth).
            match_labels: (M,) int32 in {1, 0, -1}; all 0 when G == 0 or no row is valid.
        """
        iou = tf.convert_to_tensor(iou)
        iou = tf.cast(iou, tf.float32)
        num_predictions = tf.shape(iou)[1]
        # An extra row of -1 makes the max / argmax defined when G == 0; it never wins
        # over a real row since argmax returns the first of tied maxima.
        padded = tf.concat([iou, -tf.ones([1, num_predictions], tf.float32)], axis=0)
        best_iou = tf.reduce_max(padded, axis=0)
        matched = tf.argmax(padded, axis=0, output_type=tf.int32)
        matched = tf.where(matched == tf.shape(iou)[0], 0, matched)

        labels = tf.fill([num_predictions], IGNORE)
        labels = tf.where(best_iou >= self.high_threshold, FOREGROUND, labels)
        labels = tf.where(best_iou < self.low_threshold, BACKGROUND, labels)
        if self.allow_low_quality_matches:
            labels = tf.where(_best_for_some_gt(iou), FOREGROUND, labels)
        return matched, labels


def _best_for_some_gt(iou):
    """(M,) bool: True where a prediction has the highest IoU (ties included) of a valid gt."""
    best_per_gt = tf.reduce_max(iou, axis=1, keepdims=True)
    is_best = tf.logical_and(tf.equal(iou, best_per_gt), best_per_gt > 0.0)
    return tf.reduce_any(is_best, axis=0)


def _random_uniform(num, seed):
    """(num,) uniform [0, 1) floats.

    seed None: TF's global stateful generator; an int or shape-(2,) int tensor:
    stateless (the same seed gives the same draw); a keras.random.SeedGenerator:
    advances the generator on every call.
    """
    shape = tf.reshape(num, [1])
    if seed is None:
        return tf.random.uniform(shape)
    if isinstance(seed, keras.random.SeedGenerator):
        return tf.convert_to_tensor(keras.random.uniform(shape, seed=seed))
    seed = tf.convert_to_tensor(seed)
    if seed.shape.rank == 0:
        seed = tf.stack([seed, tf.zeros_like(seed)])
    return tf.random.stateless_uniform(shape, seed=tf.cast(seed, tf.int64))


def _take_random(mask, count, keys):
    """(M,) bool: `count` entries of `mask` chosen by the largest `keys` in [0, 1)."""
    scores = tf.where(mask, keys, -1.0)
    order = tf.argsort(scores, direction="DESCENDING")
    rank = tf.math.invert_permutation(order)
    return tf.logical_and(mask, rank < count)


def sample_balanced(match_labels, num_samples, positive_fraction, seed=None):
    """Samples at most `num_samples` labels with a capped share of foreground.

    Up to floor(num_samples * positive_fraction) foreground entries are kept, then
    background entries fill up to `num_samples` (fewer when there are not enough).

    Args:
        match_labels: (M,) int labels in {1, 0, -1}.
        num_samples: total number of samples (Python int or scalar tensor).
        positive_fraction: largest share of foreground among the samples.
        seed: None, an int or shape-(2,) int tensor (stateless), or a
            keras.random.SeedGenerator.

    Returns:
        (M,) int32: the label for sampled entries, -1 for the others.
    """
    match_labels = tf.cast(tf.convert_to_tensor(match_labels), tf.int32)
    positive = tf.equal(match_labels, FOREGROUND)
    negative = tf.equal(match_labels, BACKGROUND)
    num_samples = tf.cast(num_samples, tf.int32)
    # float64 so that e.g. 10 * 0.7 floors to 7 as in Python, not to 6 as in float32.
    max_positive = tf.cast(
        tf.floor(tf.cast(num_samples, tf.float64) * float(positive_fraction)), tf.int32
    )
    num_positive = tf.minimum(tf.reduce_sum(tf.cast(positive, tf.int32)), max_positive)
    num_negative = tf.minimum(
        tf.reduce_sum(tf.cast(negative, tf.int32)), num_samples - num_positive
    )
    keys = _random_uniform(tf.size(match_labels), seed)
    keep = tf.logical_or(
        _take_random(positive, num_positive, keys), _take_random(negative, num_negative, keys)
    )
    return tf.where(keep, match_labels, IGNORE)
