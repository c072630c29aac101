"""RoIHeads parts with hand-computed cases: RoI sampling (foreground quota, background
IoU floor, negative images), the head losses and postprocessing."""

import math

import numpy as np
import tensorflow as tf

from detect.models.losses import detection_losses
from detect.models.postprocess import postprocess_detections
from detect.models.roi_heads import sample_rois
from detect.ops.box_coder import BoxCoder
from detect.ops.matching import Matcher

GT = [[0.0, 0.0, 10.0, 20.0]]
# vs GT [0,0,10,20] (area 200):
#   P0 [0,0,10,10]: intersection 100, union 200 -> IoU 0.5 -> foreground
#   P1 [0,15,10,25]: intersection [0,15,10,20] = 50, union 200 + 100 - 50 = 250 -> 0.2
#   P2 [100,100,110,110]: IoU 0
PROPOSALS = [[0.0, 0.0, 10.0, 10.0], [0.0, 15.0, 10.0, 25.0], [100.0, 100.0, 110.0, 110.0]]


def sample(proposals, gt, labels, bg_iou_low=0.0, num_samples=4, fraction=0.5):
    proposals = tf.constant(proposals, tf.float32)
    rois, roi_labels, deltas = sample_rois(
        proposals, tf.ones([proposals.shape[0]], tf.bool), tf.reshape(tf.constant(gt, tf.float32), [-1, 4]),
        tf.constant(labels, tf.int32),
        matcher=Matcher(0.5, 0.5, allow_low_quality_matches=False), coder=BoxCoder((10, 10, 5, 5)),
        num_samples=num_samples, positive_fraction=fraction, bg_iou_low=bg_iou_low,
    )
    return rois.numpy(), roi_labels.numpy(), deltas.numpy()


def by_box(rois, labels):
    return {tuple(r): int(label) for r, label in zip(rois.tolist(), labels)}


def test_foreground_quota_and_background():
    # Candidates: P0 (fg), P1 (bg), P2 (bg) and the gt itself (fg, IoU 1). 4 samples with at
    # most floor(4 * 0.5) = 2 foreground: both fg and both bg are taken.
    rois, labels, deltas = sample(PROPOSALS, GT, [3])
    assert by_box(rois, labels) == {(0, 0, 10, 10): 3, (0, 15, 10, 25): 0, (100, 100, 110, 110): 0, (0, 0, 10, 20): 3}
    # P0 -> GT with weights (10, 10, 5, 5): dy = 10 * (10 - 5) / 10 = 5, dh = 5 * log(20/10).
    row = [tuple(r) for r in rois.tolist()].index((0, 0, 10, 10))
    np.testing.assert_allclose(deltas[row], [0, 5, 0, 5 * math.log(2)], atol=1e-5)
    assert not deltas[labels <= 0].any()


def test_background_iou_floor_ignores_far_proposals():
    # bg_iou_low 0.1 (Fast R-CNN): P2 (IoU 0) is neither foreground nor background; it
    # fills the 4th slot with label -1 (no loss).
    rois, labels, _ = sample(PROPOSALS, GT, [3], bg_iou_low=0.1)
    assert by_box(rois, labels) == {(0, 0, 10, 10): 3, (0, 15, 10, 25): 0, (100, 100, 110, 110): -1, (0, 0, 10, 20): 3}


def test_quota_caps_foreground():
    # 1 sample slot for foreground (floor(4 * 0.25) = 1) out of P0 and the gt.
    _, labels, _ = sample(PROPOSALS, GT, [3], fraction=0.25)
    # 1 foreground, then background fills up to 4: P1 and P2; the last slot is the other
    # foreground candidate with label -1.
    assert sorted(labels.tolist()) == [-1, 0, 0, 3]


def test_negative_image_keeps_every_proposal_as_background():
    # No objects: even with the 0.1 floor every valid proposal is background.
    _, labels, deltas = sample(PROPOSALS, np.zeros((0, 4)), np.zeros((0,)), bg_iou_low=0.1)
    assert sorted(labels.tolist()) == [-1, 0, 0, 0]  # 3 proposals, 1 padding slot
    assert not deltas.any()


def test_detection_losses_hand_computed():
    # Logits 0 over K + 1 = 3 classes: cross entropy log(3) = 1.098612 for each of the two
    # sampled RoIs (labels 2 and 0; -1 takes no part).
    # Box: class-2 deltas of RoI 0 are [1, 0, 0, 0] against a 0 target: smooth L1 with
    # beta 1 at |x| = 1 is 1 - 0.5 = 0.5; normalized by 2 sampled RoIs -> 0.25.
    pred = np.zeros((1, 3, 2, 4), np.float32)
    pred[0, 0, 1] = [1, 0, 0, 0]
    pred[0, 0, 0] = [7, 7, 7, 7]  # class 1's deltas: not the gt class, no loss
    cls, box = detection_losses(tf.zeros([1, 3, 3]), tf.constant(pred), tf.constant([[2, 0, -1]]), tf.zeros([1, 3, 4]))
    np.testing.assert_allclose(float(cls), math.log(3), rtol=1e-6)
    np.testing.assert_allclose(float(box), 0.25, rtol=1e-6)


def test_postprocess_threshold_nms_padding_and_rescale():
    # RoI 0 scores 0.9 for class 1; RoI 1 overlaps it (IoU 81/119 = 0.68 > 0.5) at 0.8:
    # suppressed. Class 2's 0.05 is not above the 0.05 threshold. RoI 2 scores 0.99 but
    # is padding. Boxes come back divided by the scale 2.
    scores = tf.constant([[[0.9, 0.05], [0.8, 0.0], [0.99, 0.99]]])
    rois = tf.constant([[[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 4, 4]]], tf.float32)
    out = postprocess_detections(
        scores, tf.zeros([1, 3, 2, 4]), rois, tf.constant([[True, True, False]]), tf.constant([[20, 20]]),
        tf.constant([[2.0, 2.0]]), coder=BoxCoder((10, 10, 5, 5)), score_threshold=0.05, nms_iou=0.5,
        max_detections=3,
    )
    assert out["num_detections"].numpy().tolist() == [1]
    np.testing.assert_allclose(out["boxes"].numpy()[0], [[0, 0, 5, 5], [0, 0, 0, 0], [0, 0, 0, 0]])
    assert out["labels"].numpy().tolist() == [[1, 0, 0]]
    np.testing.assert_allclose(out["scores"].numpy()[0], [0.9, 0, 0], rtol=1e-6)
