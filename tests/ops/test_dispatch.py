"""Backend kernels against their keras.ops forms (ops/dispatch.py), and every op on the
JAX and PyTorch backends against TensorFlow on the same inputs (tests/ops/backend_cases.py)."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from detect.ops import bilinear, dispatch, multilevel, nms, roi_pool

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import backend_cases  # noqa: E402


def _random_boxes(rng, batch, n, span=50.0):
    corners = rng.uniform(0, span, size=(batch, n, 2))
    return np.concatenate([corners, corners + rng.uniform(1, span / 3, size=(batch, n, 2))], -1).astype("float32")


@pytest.mark.parametrize("n, max_output, iou, score", [(200, 50, 0.5, 0.2), (40, 60, 0.3, float("-inf")), (0, 5, 0.5, 0.0)])
def test_portable_nms_equals_tensorflows_kernel(n, max_output, iou, score):
    rng = np.random.default_rng(n)
    boxes = _random_boxes(rng, 3, n)
    # Scores on a coarse grid so that ties occur: both keep the lower index first.
    scores = (rng.integers(0, 20, size=(3, n)) / 20.0).astype("float32")
    expected = nms.nms_padded(boxes, scores, max_output, iou, score)
    actual = nms.greedy_nms_padded(boxes, scores, max_output, iou, score)
    np.testing.assert_array_equal(actual[1].numpy(), expected[1].numpy())
    np.testing.assert_array_equal(actual[0].numpy(), expected[0].numpy())


def test_portable_nms_hand_case():
    # Box 1 overlaps box 0 by IoU 0.81 / 1.19... (10x10 boxes shifted by 1: inter 9*10=90,
    # union 110, IoU 0.818 > 0.5): dropped. Box 2 is far: kept. Box 3 scores 0.05 <= 0.1.
    boxes = np.array([[[0, 0, 10, 10], [1, 0, 11, 10], [30, 30, 40, 40], [60, 60, 70, 70]]], "float32")
    scores = np.array([[0.9, 0.8, 0.7, 0.05]], "float32")
    indices, valid = nms.greedy_nms_padded(boxes, scores, 4, 0.5, 0.1)
    assert indices.numpy().tolist() == [[0, 2, -1, -1]] and valid.numpy().tolist() == [2]


def test_portable_crops_equal_crop_and_resize():
    rng = np.random.default_rng(3)
    images = rng.normal(size=(2, 9, 11, 3)).astype("float32")
    boxes = np.array([[0.1, 0.2, 0.8, 0.9], [-0.2, -0.1, 0.5, 1.3], [0.3, 0.3, 0.3, 0.3]], "float32")
    index = np.array([0, 1, 1], "int32")
    for size in (1, 4):
        expected = tf.image.crop_and_resize(images, boxes, index, [size, size], extrapolation_value=0.0)
        np.testing.assert_allclose(bilinear.bilinear_crops(images, boxes, index, size).numpy(), expected.numpy(),
                                   atol=1e-5)


def test_multilevel_static_form_equals_the_per_level_form():
    rng = np.random.default_rng(4)
    pyramid = [tf.constant(rng.normal(size=(2, 64 // s, 64 // s, 4)).astype("float32")) for s in (4, 8, 16, 32)]
    rois = tf.constant(_random_boxes(rng, 2, 30, span=60.0) * np.array([1, 1, 1.5, 1.5], "float32"))
    layer = multilevel.MultiLevelRoIAlign(3, (4, 8, 16, 32), 2, 16.0)
    flat = tf.reshape(rois, [-1, 4])
    index = tf.repeat(tf.range(2), 30)
    levels = multilevel.assign_levels(flat, 2, 5, 16.0)
    assert len(set(levels.numpy().tolist())) >= 3  # the case spans several levels
    np.testing.assert_allclose(layer._pool_every_level(pyramid, flat, index, levels).numpy(),
                               layer._pool_by_level(pyramid, flat, index, levels).numpy(), atol=1e-6)


def test_roi_pool_static_levels_equal_the_dynamic_ones(monkeypatch):
    rng = np.random.default_rng(5)
    features = tf.constant(rng.normal(size=(2, 13, 17, 3)).astype("float32"))
    # RoIs from a few cells to the whole map (and past it), so that many levels are used.
    rois = tf.constant(_random_boxes(rng, 2, 12, span=120.0) * np.array([1, 1, 1.6, 1.6], "float32"))
    layer = roi_pool.RoIPool(4, 1 / 8)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(features)
        native = layer(features, rois)
        monkeypatch.setattr(dispatch, "native_available", lambda: False)
        portable = layer(features, rois)
        weights = tf.constant(rng.normal(size=native.shape).astype("float32"))
        loss_native, loss_portable = tf.reduce_sum(native * weights), tf.reduce_sum(portable * weights)
    np.testing.assert_array_equal(portable.numpy(), native.numpy())
    np.testing.assert_array_equal(tape.gradient(loss_portable, features).numpy(),
                                  tape.gradient(loss_native, features).numpy())


def _other_backend_outputs(backend, tmp_path, torchvision_ops="1"):
    out = tmp_path / f"{backend}.npz"
    env = {**os.environ, "KERAS_BACKEND": backend, "CUDA_VISIBLE_DEVICES": "", "DETECT_TORCHVISION_OPS": torchvision_ops}
    result = subprocess.run([sys.executable, os.path.join(HERE, "backend_cases.py"), str(out)], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = dict(np.load(out))
    return outputs, bool(outputs.pop("_kernels/torchvision"))


def _torchvision_importable():
    """torchvision's C++ ops load beside this torch (a subprocess: this one runs TensorFlow)."""
    probe = "import torch, torchvision.ops; torchvision.ops.nms(torch.zeros((1, 4)), torch.zeros(1), 0.5)"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


# torch: torchvision's NMS and RoIAlign where torchvision imports (make install-test puts it
# in); torch-portable: the keras.ops forms on PyTorch (DETECT_TORCHVISION_OPS=0).
@pytest.mark.parametrize("backend, module, torchvision_ops", [
    ("jax", "jax", "1"), ("torch", "torch", "1"), ("torch", "torch", "0")], ids=["jax", "torch", "torch-portable"])
def test_ops_on_other_backends_equal_tensorflow(backend, module, torchvision_ops, tmp_path):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed: make install-test")
    actual, used_torchvision = _other_backend_outputs(backend, tmp_path, torchvision_ops)
    if backend == "torch" and torchvision_ops == "1":
        assert _torchvision_importable(), "torchvision does not import beside torch: make install-test"
        assert used_torchvision
    else:
        assert not used_torchvision
    expected = {f"{name}/{key}": value for name, case in backend_cases.cases().items() for key, value in case().items()}
    assert sorted(actual) == sorted(expected)
    for key, value in expected.items():
        if value.dtype.kind in "iub":
            np.testing.assert_array_equal(actual[key], value, err_msg=key)
        else:
            np.testing.assert_allclose(actual[key], value, rtol=1e-4, atol=1e-4, err_msg=key)
