"""Caffe-style L2 in SGD: decay inside momentum, kernels only; checked against hand arithmetic."""

import keras
import numpy as np
import pytest

from detect.errors import DetectError
from detect.training.optimizers import CaffeSGD, build_optimizer


def two_steps(optimizer):
    """Dense(1) kernel w0 = 2, bias b0 = 1 and a BatchNorm gamma = 1, beta = 0; two steps
    with every gradient 0.5. Returns (kernel, bias, gamma, beta) after the steps."""
    dense = keras.layers.Dense(1)
    dense.build((None, 1))
    dense.kernel.assign([[2.0]])
    dense.bias.assign([1.0])
    norm = keras.layers.BatchNormalization()
    norm.build((None, 1))
    variables = [dense.kernel, dense.bias, norm.gamma, norm.beta]
    for _ in range(2):
        optimizer.apply_gradients([(np.full(v.shape, 0.5, "float32"), v) for v in variables])
    return [float(np.ravel(v.numpy())[0]) for v in variables]


def test_one_step_matches_caffe_l2_by_hand():
    # lr 0.1, momentum 0.9, wd 0.01, gradient 0.5 everywhere.
    # kernel, step 1: g' = 0.5 + 0.01 * 2 = 0.52;   v = -0.1 * 0.52 = -0.052;  w = 1.948
    #         step 2: g' = 0.5 + 0.01 * 1.948 = 0.51948;
    #                 v = 0.9 * -0.052 - 0.1 * 0.51948 = -0.098748;  w = 1.849252
    # bias (no decay): v = -0.05, b = 0.95; v = 0.9 * -0.05 - 0.05 = -0.095, b = 0.855
    # gamma (no decay): 1 -> 0.95 -> 0.855; beta: 0 -> -0.05 -> -0.145
    kernel, bias, gamma, beta = two_steps(CaffeSGD(learning_rate=0.1, momentum=0.9, l2=0.01))
    assert kernel == pytest.approx(1.849252, abs=1e-6)
    assert bias == pytest.approx(0.855, abs=1e-6)
    assert gamma == pytest.approx(0.855, abs=1e-6)
    assert beta == pytest.approx(-0.145, abs=1e-6)


def test_keras_sgd_decay_differs():
    # Keras' decoupled decay, step 1: w = 2 * (1 - 0.1 * 0.01) = 1.998, then v = -0.05: 1.948;
    # step 2: w = 1.948 * 0.999 = 1.946052, v = -0.095: 1.851052 (not 1.849252); the bias is
    # decayed too: 1 * 0.999 - 0.05 = 0.949, then 0.949 * 0.999 - 0.095 = 0.853051.
    kernel, bias, _, _ = two_steps(keras.optimizers.SGD(learning_rate=0.1, momentum=0.9, weight_decay=0.01))
    assert kernel == pytest.approx(1.851052, abs=1e-6)
    assert bias == pytest.approx(0.853051, abs=1e-6)


def test_without_decay_it_is_keras_sgd():
    ours = two_steps(CaffeSGD(learning_rate=0.1, momentum=0.9, l2=0.0))
    keras_sgd = two_steps(keras.optimizers.SGD(learning_rate=0.1, momentum=0.9))
    np.testing.assert_allclose(ours, keras_sgd, atol=1e-7)


def test_build_optimizer_from_training_config():
    training = {"optimizer": "sgd", "learning_rate": 0.02, "momentum": 0.9, "weight_decay": 5e-4, "clipnorm": 10.0}
    sgd = build_optimizer(training)
    assert isinstance(sgd, CaffeSGD) and sgd.l2 == 5e-4 and sgd.momentum == 0.9 and sgd.clipnorm == 10.0
    assert sgd.weight_decay is None  # no decoupled decay on top
    assert CaffeSGD.from_config(sgd.get_config()).l2 == 5e-4
    adamw = build_optimizer({**training, "optimizer": "adamw"})
    assert isinstance(adamw, keras.optimizers.AdamW) and adamw.weight_decay == 5e-4
    assert type(build_optimizer({**training, "optimizer": "adam"})) is keras.optimizers.Adam
    with pytest.raises(DetectError, match="training.optimizer"):
        build_optimizer({**training, "optimizer": "rmsprop"})


def test_adamw_does_not_decay_biases():
    # AdamW step 1 with lr 0.1: Adam moves every variable by lr * m / (sqrt(v) + eps) = 0.1
    # (bias-corrected m = g, v = g^2); decoupled decay shrinks the kernel by lr * wd * w
    # = 0.1 * 0.1 * 2 = 0.02 first: 2 - 0.02 - 0.1 = 1.88. The bias only moves: 1 - 0.1 = 0.9.
    optimizer = build_optimizer({"optimizer": "adamw", "learning_rate": 0.1, "weight_decay": 0.1})
    dense = keras.layers.Dense(1)
    dense.build((None, 1))
    dense.kernel.assign([[2.0]])
    dense.bias.assign([1.0])
    optimizer.apply_gradients([(np.full((1, 1), 0.5, "float32"), dense.kernel), (np.full((1,), 0.5, "float32"), dense.bias)])
    assert float(dense.kernel.numpy()[0, 0]) == pytest.approx(1.88, abs=1e-5)
    assert float(dense.bias.numpy()[0]) == pytest.approx(0.9, abs=1e-5)


def test_caffe_sgd_refuses_keras_weight_decay():
    with pytest.raises(ValueError, match="leave SGD's decoupled"):
        CaffeSGD(l2=0.1, weight_decay=0.1)


def _random_steps(optimizer, steps=3, in_function=False):
    """Variables (a 3x4 kernel, a bias) after `steps` updates with fixed random gradients."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    kernel = keras.Variable(rng.normal(size=(3, 4)).astype("float32"), name="kernel")
    bias = keras.Variable(rng.normal(size=(4,)).astype("float32"), name="bias")
    grads = [[rng.normal(size=v.shape).astype("float32") for v in (kernel, bias)] for _ in range(steps)]
    optimizer.build([kernel, bias])

    def step(g):
        optimizer.apply_gradients(zip(g, [kernel, bias]))

    run = tf.function(step) if in_function else step
    for g in grads:
        run([tf.constant(x) for x in g])
    return [kernel.numpy(), bias.numpy()]


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("in_function", [False, True])
def test_fused_momentum_update_equals_keras_sgd(monkeypatch, nesterov, in_function):
    import detect.training.optimizers as optimizers

    taken = []

    def spy(*args, **kwargs):
        taken.append(optimizers_fused(*args, **kwargs))
        return taken[-1]

    optimizers_fused = optimizers.fused_keras_momentum
    monkeypatch.setattr(optimizers, "fused_keras_momentum", spy)
    ours = _random_steps(CaffeSGD(learning_rate=0.1, momentum=0.9, nesterov=nesterov), in_function=in_function)
    assert taken and all(taken)  # the fused kernel did the updates
    reference = _random_steps(keras.optimizers.SGD(learning_rate=0.1, momentum=0.9, nesterov=nesterov),
                              in_function=in_function)
    for a, b in zip(ours, reference):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_fused_momentum_is_skipped_for_sparse_gradients():
    import tensorflow as tf

    from detect.compat import fused_keras_momentum

    variable, accumulator = tf.Variable(tf.ones([4, 2])), tf.Variable(tf.zeros([4, 2]))
    sparse = tf.IndexedSlices(tf.ones([1, 2]), tf.constant([1]), tf.constant([4, 2]))
    assert fused_keras_momentum(variable, accumulator, 0.1, sparse, 0.9) is False
    np.testing.assert_array_equal(variable.numpy(), np.ones([4, 2]))  # untouched: Keras' update applies
