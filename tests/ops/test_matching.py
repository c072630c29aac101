import keras
import numpy as np
import pytest
import tensorflow as tf

from detect.errors import DetectError
from detect.ops.matching import Matcher, sample_balanced

# Rows: ground truth, columns: predictions.
IOU = np.array(
    [
        [0.8, 0.5, 0.1, 0.0, 0.7],
        [0.2, 0.6, 0.25, 0.0, 0.3],
    ],
    np.float32,
)


def _match(matcher, iou):
    matched, labels = matcher(iou)
    return matched.numpy().tolist(), labels.numpy().tolist()


def test_thresholds_and_ignore_band():
    matched, labels = _match(Matcher(0.7, 0.3, allow_low_quality_matches=False), IOU)
    # column best IoU: 0.8 (gt 0), 0.6 (gt 1), 0.25 (gt 1), 0.0 (gt 0), 0.7 (gt 0)
    assert matched == [0, 1, 1, 0, 0]
    # 0.8 >= 0.7 fg; 0.6 in [0.3, 0.7) ignore; 0.25 < 0.3 bg; 0 bg; 0.7 >= 0.7 fg
    assert labels == [1, -1, 0, 0, 1]


def test_low_threshold_itself_is_ignored_not_background():
    _, labels = _match(Matcher(0.7, 0.3, False), np.array([[0.3, 0.2999]], np.float32))
    assert labels == [-1, 0]


def test_low_quality_matches_rescue_best_prediction_of_each_gt():
    _, labels = _match(Matcher(0.7, 0.3, allow_low_quality_matches=True), IOU)
    # gt 1's best prediction is column 1 (0.6): ignore -> foreground
    assert labels == [1, 1, 0, 0, 1]


def test_low_quality_matches_include_ties():
    iou = np.array(
        [
            [0.4, 0.1, 0.4, 0.2],  # best 0.4 at columns 0 and 2 (a tie)
            [0.0, 0.2, 0.0, 0.2],  # best 0.2 at columns 1 and 3, both below 0.3
        ],
        np.float32,
    )
    matched, labels = _match(Matcher(0.7, 0.3, True), iou)
    assert labels == [1, 1, 1, 1]
    # the rescued column keeps its own best gt; column 3 ties at 0.2 and takes the first
    assert matched == [0, 1, 0, 0]


def test_invalid_rows_are_never_matched_or_rescued():
    iou = np.concatenate([IOU, -np.ones((2, 5), np.float32)])  # two padded gt rows
    matched, labels = _match(Matcher(0.7, 0.3, True), iou)
    assert (matched, labels) == _match(Matcher(0.7, 0.3, True), IOU)


def test_gt_with_zero_overlap_everywhere_rescues_nothing():
    iou = np.array([[0.0, 0.0], [0.1, 0.0]], np.float32)
    _, labels = _match(Matcher(0.7, 0.3, True), iou)
    # gt 0 has max 0: no rescue; gt 1 rescues column 0 only
    assert labels == [1, 0]


@pytest.mark.parametrize("iou", [np.zeros((0, 4)), -np.ones((3, 4))])
def test_no_valid_ground_truth_gives_all_background(iou):
    matched, labels = _match(Matcher(0.7, 0.3, True), iou.astype(np.float32))
    assert matched == [0, 0, 0, 0]
    assert labels == [0, 0, 0, 0]


def test_no_predictions():
    matched, labels = _match(Matcher(0.7, 0.3, True), np.zeros((3, 0), np.float32))
    assert matched == [] and labels == []


def test_roi_head_matcher_has_no_ignore_band():
    iou = np.array([[0.5, 0.4999, 0.9, 0.0]], np.float32)
    _, labels = _match(Matcher(0.5, 0.5, False), iou)
    assert labels == [1, 0, 1, 0]


def test_graph_mode_with_dynamic_shapes():
    matcher = Matcher(0.7, 0.3, True)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32)])
    def run(iou):
        return matcher(iou)

    matched, labels = run(tf.constant(IOU))
    assert labels.numpy().tolist() == [1, 1, 0, 0, 1]
    assert matched.dtype == tf.int32 and labels.dtype == tf.int32
    matched, labels = run(tf.zeros((0, 3)))
    assert labels.numpy().tolist() == [0, 0, 0]


def test_thresholds_in_wrong_order_are_a_user_error():
    with pytest.raises(DetectError, match="low_threshold"):
        Matcher(0.3, 0.7)


LABELS = np.array([1] * 10 + [0] * 100 + [-1] * 20, np.int32)


def _counts(sampled):
    sampled = np.asarray(sampled)
    return int((sampled == 1).sum()), int((sampled == 0).sum())


def _assert_subset(sampled, labels):
    sampled = np.asarray(sampled)
    kept = sampled != -1
    np.testing.assert_array_equal(sampled[kept], labels[kept])


def test_sampler_caps_positives_and_fills_with_negatives():
    sampled = sample_balanced(LABELS, 32, 0.25, seed=1).numpy()
    assert _counts(sampled) == (8, 24)  # 32 * 0.25 = 8 positives, 24 negatives fill up
    _assert_subset(sampled, LABELS)


def test_sampler_with_few_positives_takes_more_negatives():
    labels = np.array([1] * 3 + [0] * 100, np.int32)
    sampled = sample_balanced(labels, 32, 0.5, seed=2).numpy()
    assert _counts(sampled) == (3, 29)
    _assert_subset(sampled, labels)


def test_sampler_with_too_few_labels_keeps_all_and_never_ignored_ones():
    labels = np.array([1, 0, -1, 0, -1], np.int32)
    sampled = sample_balanced(labels, 64, 0.5, seed=3).numpy()
    assert sampled.tolist() == [1, 0, -1, 0, -1]


def test_sampler_positive_cap_uses_python_floor():
    labels = np.ones(20, np.int32)
    # 10 * 0.7 = 7.000000000000001 -> 7 (in float32 it would be 6.9999999 -> 6)
    assert _counts(sample_balanced(labels, 10, 0.7, seed=0).numpy()) == (7, 0)


def test_sampler_stateless_seed_is_reproducible_and_seeds_differ():
    first = sample_balanced(LABELS, 32, 0.25, seed=5).numpy()
    np.testing.assert_array_equal(first, sample_balanced(LABELS, 32, 0.25, seed=5).numpy())
    picks = {tuple(np.flatnonzero(sample_balanced(LABELS, 32, 0.25, seed=s).numpy() == 1))
             for s in range(6)}
    assert len(picks) > 1  # different seeds choose different positives


def test_sampler_unseeded_and_seed_generator_in_graph():
    generator = keras.random.SeedGenerator(7)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32)])
    def run(labels):
        return sample_balanced(labels, 16, 0.5), sample_balanced(labels, 16, 0.5, seed=generator)

    first = [s.numpy() for s in run(tf.constant(LABELS))]
    second = [s.numpy() for s in run(tf.constant(LABELS))]
    for sampled in first + second:
        assert _counts(sampled) == (8, 8)
        _assert_subset(sampled, LABELS)
    # the generator advances between steps, so they draw different samples
    assert not np.array_equal(first[1], second[1])


def test_sampler_empty_input():
    assert sample_balanced(np.zeros((0,), np.int32), 16, 0.5, seed=0).shape == (0,)
