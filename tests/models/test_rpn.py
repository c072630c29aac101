"""RegionProposalNetwork parts with hand-computed cases: target assignment (2 anchors,
1 box), border anchors removed before matching, the proposal layer (top-k, clipping, NMS,
padding), the loss, and the layer's config round trip."""

import math

import numpy as np
import tensorflow as tf

from detect.models.losses import rpn_losses
from detect.models.rpn import RegionProposalNetwork, generate_proposals, rpn_targets
from detect.ops.anchors import grid_anchors
from detect.ops.box_coder import BoxCoder
from detect.ops.boxes import pairwise_iou
from detect.ops.matching import Matcher


def targets(anchors, gt_boxes, gt_labels, image_shape=(100, 100), ignore_border=False):
    return rpn_targets(
        tf.constant(anchors, tf.float32), tf.constant(gt_boxes, tf.float32), tf.constant(gt_labels, tf.int32),
        tf.constant(image_shape, tf.int32), matcher=Matcher(0.7, 0.3, allow_low_quality_matches=True),
        coder=BoxCoder(), num_samples=256, positive_fraction=0.5, ignore_border=ignore_border,
    )


def test_two_anchors_one_box_hand_computed():
    # A0 [0,0,10,10] vs gt [0,0,10,20]: intersection 100, union 100 + 200 - 100 = 200,
    # IoU 0.5: between 0.3 and 0.7, but A0 is the gt's best anchor -> foreground.
    # A1 [20,20,30,30] does not touch the gt: IoU 0 < 0.3 -> background.
    labels, deltas = targets([[0, 0, 10, 10], [20, 20, 30, 30]], [[0, 0, 10, 20]], [1])
    assert labels.numpy().tolist() == [1, 0]
    # A0 centre (5, 5) 10 x 10; gt centre (5, 10) 10 x 20:
    # dx = 0, dy = (10 - 5) / 10 = 0.5, dw = log(10/10) = 0, dh = log(20/10) = 0.693147.
    np.testing.assert_allclose(deltas.numpy(), [[0, 0.5, 0, math.log(2)], [0, 0, 0, 0]], atol=1e-6)


def test_padding_ground_truth_and_no_ground_truth():
    anchors = [[0, 0, 10, 10], [20, 20, 30, 30]]
    # A padding row (label -1) is never matched: both anchors are background.
    labels, deltas = targets(anchors, [[0, 0, 10, 20]], [-1])
    assert labels.numpy().tolist() == [0, 0]
    assert not deltas.numpy().any()
    labels, _ = targets(anchors, np.zeros((0, 4)), np.zeros((0,)))
    assert labels.numpy().tolist() == [0, 0]


def test_object_at_the_border_gets_its_best_inside_anchor():
    # The paper's setting: stride 16, sizes 128/256/512 x ratios 0.5/1/2 on a 600 x 1000
    # image; the box [0, 250, 100, 350] touches the left border. Its best anchor overall
    # crosses the border; removed before matching, the best inside anchor (IoU ~0.535)
    # becomes its positive through the low-quality match.
    anchors = grid_anchors(38, 63, 16, (128, 256, 512), (0.5, 1.0, 2.0))
    gt = tf.constant([[0.0, 250.0, 100.0, 350.0]])
    iou = pairwise_iou(gt, anchors).numpy()[0]
    a = anchors.numpy()
    inside = (a[:, 0] >= 0) & (a[:, 1] >= 0) & (a[:, 2] <= 1000) & (a[:, 3] <= 600)
    assert not inside[np.argmax(iou)]  # the overall best crosses the border
    best_inside = np.max(np.where(inside, iou, -1))
    assert 0.5 < best_inside < 0.7
    labels, _ = targets(anchors, gt, [1], image_shape=(600, 1000), ignore_border=True)
    labels = labels.numpy()
    positives = np.flatnonzero(labels == 1)
    assert len(positives) >= 1
    assert inside[positives].all()
    np.testing.assert_allclose(iou[positives], best_inside, rtol=1e-6)


def propose(objectness, image_shape=(60, 60), pre=3, post=3):
    anchors = tf.constant([[0, 0, 10, 10], [1, 1, 11, 11], [40, 40, 70, 70]], tf.float32)
    return generate_proposals(
        tf.constant([objectness], tf.float32), tf.zeros([1, 3, 4]), anchors, tf.constant([image_shape], tf.int32),
        coder=BoxCoder(), pre_nms_top_n=pre, post_nms_top_n=post, nms_iou=0.5,
    )


def test_proposal_layer_nms_and_clipping():
    # Zero deltas: proposals are the anchors. [1,1,11,11] overlaps [0,0,10,10] with
    # IoU 81 / (100 + 100 - 81) = 0.68 > 0.5 and scores lower: suppressed.
    # [40,40,70,70] is clipped to the 60 x 60 image: [40,40,60,60].
    boxes, valid = propose([3.0, 2.0, 1.0])
    assert valid.numpy().tolist() == [[True, True, False]]
    np.testing.assert_allclose(boxes.numpy()[0], [[0, 0, 10, 10], [40, 40, 60, 60], [0, 0, 0, 0]])


def test_proposal_layer_top_k_before_nms():
    # pre_nms_top_n 2 keeps the two best-scoring anchors; NMS then drops the second.
    boxes, valid = propose([3.0, 2.0, 1.0], pre=2)
    assert valid.numpy().tolist() == [[True, False, False]]
    np.testing.assert_allclose(boxes.numpy()[0, 0], [0, 0, 10, 10])


def test_anchors_centred_on_canvas_padding_give_no_proposal():
    # Image content 40 x 40 of the canvas: the third anchor's centre (55, 55) is padding.
    boxes, valid = propose([1.0, 2.0, 3.0], image_shape=(40, 40))
    assert valid.numpy().tolist() == [[True, False, False]]
    np.testing.assert_allclose(boxes.numpy()[0, 0], [1, 1, 11, 11])


def test_rpn_losses_hand_computed():
    # Logits 0: binary cross entropy log(2) = 0.693147 for both sampled anchors.
    # Box: |0.5 - 0| >= beta = 1/9 -> 0.5 - 0.5 / 9 / 2 = 0.472222 for the foreground anchor;
    # both normalized by the 2 sampled anchors -> 0.236111.
    cls, box = rpn_losses(tf.zeros([1, 3]), tf.constant([[[0.5, 0, 0, 0], [9, 9, 9, 9], [9, 9, 9, 9]]]),
                          tf.constant([[1, 0, -1]]), tf.zeros([1, 3, 4]))
    assert float(cls) == np.float32(math.log(2))
    np.testing.assert_allclose(float(box), (0.5 - 0.5 / 9) / 2, rtol=1e-6)


def test_layer_follows_any_feature_size_and_round_trips_its_config():
    rpn = RegionProposalNetwork(anchor_sizes=(16, 32), channels=8, pre_nms_top_n_test=50, post_nms_top_n_test=10)
    rpn.build((None, None, None, 4))
    for h, w in ((3, 5), (5, 3)):
        out = rpn(tf.zeros([2, h, w, 4]), tf.constant([[16 * h, 16 * w]] * 2, tf.int32))
        # h x w cells x 2 sizes x 3 ratios anchors; 10 proposals per image.
        assert out["anchors"].shape == (h * w * 6, 4)
        assert out["objectness"].shape == (2, h * w * 6)
        assert out["proposals"].shape == (2, 10, 4)
    clone = RegionProposalNetwork.from_config(rpn.get_config())
    assert clone.get_config() == rpn.get_config()
