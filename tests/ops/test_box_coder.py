import math

import numpy as np
import pytest
import tensorflow as tf

from detect.ops.box_coder import BoxCoder

ANCHOR = np.array([[0, 0, 10, 10]], np.float32)  # centre (5, 5), 10 x 10
TARGET = np.array([[2, 4, 12, 24]], np.float32)  # centre (7, 14), 10 x 20


def test_encode_hand_computed():
    deltas = BoxCoder().encode(TARGET, ANCHOR).numpy()
    # dx = (7-5)/10 = 0.2, dy = (14-5)/10 = 0.9, dw = log(10/10) = 0, dh = log(20/10)
    np.testing.assert_allclose(deltas, [[0.2, 0.9, 0.0, math.log(2)]], rtol=1e-6, atol=1e-7)


def test_encode_with_weights_10_10_5_5():
    deltas = BoxCoder(weights=(10, 10, 5, 5)).encode(TARGET, ANCHOR).numpy()
    # 10*0.2, 10*0.9, 5*0, 5*log(2)
    np.testing.assert_allclose(deltas, [[2.0, 9.0, 0.0, 5 * math.log(2)]], rtol=1e-6, atol=1e-6)


def test_decode_hand_computed_with_weights():
    coder = BoxCoder(weights=(10, 10, 5, 5))
    # dx = 10/10 = 1 anchor width right; dw = 5*log(2)/5 doubles the width.
    deltas = np.array([[10.0, 0.0, 5 * math.log(2), 0.0]], np.float32)
    # centre (5 + 10, 5), width 20, height 10
    np.testing.assert_allclose(coder.decode(deltas, ANCHOR).numpy(), [[5, 0, 25, 10]], rtol=1e-6)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_encode_decode_round_trip(weights):
    rng = np.random.default_rng(0)

    def random_boxes(n):
        xy = rng.uniform(0, 500, (n, 2))
        return np.concatenate([xy, xy + rng.uniform(4, 300, (n, 2))], -1).astype(np.float32)

    boxes, anchors = random_boxes(200), random_boxes(200)
    coder = BoxCoder(weights=weights)
    decoded = coder.decode(coder.encode(boxes, anchors), anchors).numpy()
    np.testing.assert_allclose(decoded, boxes, atol=1e-3)


def test_decode_clamps_huge_scale():
    anchor = np.array([[0, 0, 16, 32]], np.float32)  # centre (8, 16)
    boxes = BoxCoder().decode(np.array([[0, 0, 100.0, 100.0]], np.float32), anchor).numpy()
    # exp(log(1000/16)) = 62.5: width 16*62.5 = 1000, height 32*62.5 = 2000
    np.testing.assert_allclose(boxes, [[8 - 500, 16 - 1000, 8 + 500, 16 + 1000]], rtol=1e-5)


def test_clamp_applies_after_dividing_by_weights():
    coder = BoxCoder(weights=(1, 1, 5, 5), scale_clamp=math.log(4.0))
    anchor = np.array([[0, 0, 10, 10]], np.float32)
    # dw = 5 * log(3) / 5 = log(3) < log(4): not clamped, width 30; dh = 50/5 = 10 -> log(4): 40
    boxes = coder.decode(np.array([[0, 0, 5 * math.log(3), 50.0]], np.float32), anchor).numpy()
    np.testing.assert_allclose(boxes, [[5 - 15, 5 - 20, 5 + 15, 5 + 20]], rtol=1e-5)


def test_padding_targets_encode_to_finite_values():
    deltas = BoxCoder().encode(np.zeros((2, 4), np.float32), np.tile(ANCHOR, (2, 1))).numpy()
    assert np.all(np.isfinite(deltas))


def test_broadcasting_and_empty():
    coder = BoxCoder()
    boxes = np.tile(TARGET, (2, 3, 1))  # (2, 3, 4) against (3, 4) anchors
    deltas = coder.encode(boxes, np.tile(ANCHOR, (3, 1)))
    assert deltas.shape == (2, 3, 4)
    assert coder.encode(np.zeros((0, 4)), np.zeros((0, 4))).shape == (0, 4)
    assert coder.decode(np.zeros((0, 4)), np.zeros((0, 4))).shape == (0, 4)


def test_decode_accepts_float16_deltas_and_runs_in_tf_function():
    coder = BoxCoder()
    spec = tf.TensorSpec([None, None, 4], tf.float16)

    @tf.function(input_signature=[spec, tf.TensorSpec([None, 4], tf.float32)])
    def decode(deltas, anchors):
        return coder.decode(deltas, anchors)

    boxes = decode(tf.zeros((1, 1, 4), tf.float16), tf.constant(ANCHOR))
    assert boxes.dtype == tf.float32
    np.testing.assert_allclose(boxes.numpy(), [ANCHOR])


def test_rejects_wrong_number_of_weights():
    with pytest.raises(ValueError, match="4 values"):
        BoxCoder(weights=(1, 1, 1))
