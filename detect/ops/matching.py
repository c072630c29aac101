"""Matching predictions (anchors, proposals) to ground truth, and balanced sampling.

Shapes: G ground-truth boxes (rows), M predictions (columns).
Match labels: 1 foreground, 0 background, -1 ignored.
"""

import math

import keras
from keras import ops

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
        iou = ops.cast(ops.convert_to_tensor(iou), "float32")
        # An extra row of -1 makes the max / argmax defined when G == 0; it never wins
        # over a real row since argmax returns the first of tied maxima.
        padded = ops.concatenate([iou, -ops.ones_like(ops.sum(iou, axis=0, keepdims=True))], axis=0)
        best_iou = ops.max(padded, axis=0, initial=-1.0)
        matched = ops.cast(ops.argmax(padded, axis=0), "int32")
        matched = ops.where(matched == ops.shape(iou)[0], 0, matched)

        labels = ops.full_like(matched, IGNORE)
        labels = ops.where(best_iou >= self.high_threshold, FOREGROUND, labels)
        labels = ops.where(best_iou < self.low_threshold, BACKGROUND, labels)
        if self.allow_low_quality_matches:
            labels = ops.where(_best_for_some_gt(iou), FOREGROUND, labels)
        return matched, labels


def _best_for_some_gt(iou):
    """(M,) bool: True where a prediction has the highest IoU (ties included) of a valid gt."""
    # The -1 row keeps the max defined when G == 0 (it is never > 0).
    best_per_gt = ops.max(iou, axis=1, keepdims=True, initial=-1.0)
    is_best = ops.logical_and(ops.equal(iou, best_per_gt), best_per_gt > 0.0)
    return ops.any(is_best, axis=0)


def _random_uniform(like, seed):
    """Uniform [0, 1) floats of the shape of `like`.

    seed None: Keras' global seed generator; an int: the same draw for the same seed; a
    keras.random.SeedGenerator: advances the generator on every call (what a layer
    passes, so a compiled step draws new keys each step on every backend).
    """
    return keras.random.uniform(ops.shape(like), seed=seed)


def _take_random(mask, count, keys):
    """(M,) bool: `count` entries of `mask` chosen by the largest `keys` in [0, 1)."""
    scores = ops.where(mask, keys, -1.0)
    order = ops.argsort(-scores)
    rank = ops.argsort(order)  # the inverse permutation: rank of each entry
    return ops.logical_and(mask, rank < count)


def sample_balanced(match_labels, num_samples, positive_fraction, seed=None, keys=None):
    """Samples at most `num_samples` labels with a capped share of foreground.

    Up to floor(num_samples * positive_fraction) foreground entries are kept, then
    background entries fill up to `num_samples` (fewer when there are not enough).

    Args:
        match_labels: (M,) int labels in {1, 0, -1}.
        num_samples: total number of samples (Python int: shapes stay static).
        positive_fraction: largest share of foreground among the samples.
        seed: None, an int (the same draw for the same seed) or a
            keras.random.SeedGenerator.
        keys: (M,) uniform [0, 1) keys drawn by the caller instead (then `seed` is
            unused): the largest keys of each kind are sampled.

    Returns:
        (M,) int32: the label for sampled entries, -1 for the others.
    """
    match_labels = ops.cast(ops.convert_to_tensor(match_labels), "int32")
    positive = ops.equal(match_labels, FOREGROUND)
    negative = ops.equal(match_labels, BACKGROUND)
    # In Python (float64), so that e.g. 10 * 0.7 floors to 7, not to 6 as in float32.
    num_samples = int(num_samples)
    max_positive = math.floor(num_samples * float(positive_fraction))
    num_positive = ops.minimum(ops.sum(ops.cast(positive, "int32")), max_positive)
    num_negative = ops.minimum(ops.sum(ops.cast(negative, "int32")), num_samples - num_positive)
    keys = _random_uniform(match_labels, seed) if keys is None else keys
    keep = ops.logical_or(
        _take_random(positive, num_positive, keys), _take_random(negative, num_negative, keys)
    )
    return ops.where(keep, match_labels, IGNORE)
