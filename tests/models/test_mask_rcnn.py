"""Mask R-CNN: the mask head's targets and loss by hand, and a CPU smoke test of the model
(one train step with an image without objects, predict, save / load)."""

import inspect
import math

import keras
import numpy as np
import pytest
from keras import ops

from detect.config import DEFAULTS, from_dict
from detect.models import registry
from detect.models.mask_head import MaskHead, select_class
from detect.ops.masks import mask_targets, matched_gt

CLASSES = ["circle", "rectangle", "triangle"]


def test_mask_target_of_a_box_half_outside_its_gt_mask():
    # The gt mask fills columns 0..15 of a 32x32 canvas (every row); the RoI (8, 0, 24, 16)
    # has its left half on the object. Aligned RoIAlign, 28 bins of 16/28 px, 2 samples a
    # bin: bin 13 samples x = 8 + 26.5 * 16/56 = 15.571 and 15.857; the mask read at
    # x - 0.5 (pixel centres) is 1 - 0.071 = 0.929 and 1 - 0.357 = 0.643, mean 0.786 >= 0.5:
    # on. Bin 14: x = 16.143, 16.429 -> 0.357, 0.071, mean 0.214: off. So columns 0..13 of
    # the 28x28 target are 1 and 14..27 are 0, in every row.
    gt = np.zeros((1, 1, 32, 32), np.uint8)
    gt[..., :16] = 1
    rois = np.array([[[8.0, 0.0, 24.0, 16.0]]], np.float32)
    targets = ops.convert_to_numpy(mask_targets(gt, np.zeros((1, 1), np.int32), rois, 28))
    expected = np.zeros((28, 28), np.float32)
    expected[:, :14] = 1
    np.testing.assert_array_equal(targets[0, 0], expected)


def test_each_roi_takes_the_mask_of_the_gt_it_overlaps_most():
    gt_boxes = np.array([[[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 0, 0]]], np.float32)
    gt_labels = np.array([[1, 2, -1]], np.int32)
    rois = np.array([[[21, 19, 30, 30], [1, 1, 10, 11], [0, 0, 1, 1]]], np.float32)
    np.testing.assert_array_equal(ops.convert_to_numpy(matched_gt(rois, gt_boxes, gt_labels)), [[1, 0, 0]])
    # No gt at all (a negative image): index 0, whose weight is 0 anyway.
    none = matched_gt(rois, np.zeros((1, 3, 4), np.float32), -np.ones((1, 3), np.int32))
    np.testing.assert_array_equal(ops.convert_to_numpy(none), [[0, 0, 0]])


def test_loss_uses_the_gt_class_only():
    head = MaskHead(num_classes=3, pool_size=2, channels=4, num_convs=1, num_rois=2)
    # Logits 0 on class 2 (the RoI's label) give BCE log 2 per pixel whatever the target;
    # the other classes' logits (+-50) would cost 0 or 50 per pixel if they counted.
    logits = np.zeros((1, 2, 4, 4, 3), np.float32)
    logits[..., 0], logits[..., 2] = 50.0, -50.0
    labels = np.array([[2, -1]], np.int32)
    targets = np.ones((1, 2, 4, 4), np.float32)
    weights = np.array([[1.0, 0.0]], np.float32)
    loss = float(ops.convert_to_numpy(head.loss(logits, labels, targets, weights)))
    assert loss == pytest.approx(math.log(2.0), rel=1e-5)
    # No foreground RoI: 0, not NaN.
    assert float(ops.convert_to_numpy(head.loss(logits, labels, targets, np.zeros((1, 2), np.float32)))) == 0.0
    picked = ops.convert_to_numpy(select_class(logits, np.array([[1, 3]])))
    assert picked[0, 0, 0, 0] == 50.0 and picked[0, 1, 0, 0] == -50.0


def test_select_keeps_foreground_rois_first_in_order():
    head = MaskHead(num_classes=3, pool_size=2, channels=4, num_convs=1, num_rois=3)
    rois = np.arange(5 * 4, dtype=np.float32).reshape(1, 5, 4)
    labels = np.array([[0, 2, -1, 1, 0]], np.int32)
    chosen, picked = head.select(rois, labels)
    np.testing.assert_array_equal(ops.convert_to_numpy(picked), [[2, 1, -1]])
    np.testing.assert_array_equal(ops.convert_to_numpy(chosen)[0, :2], rois[0, [1, 3]])


def test_mask_config_defaults_equal_the_head_defaults():
    parameters = inspect.signature(MaskHead).parameters
    for key, argument in registry.MASK_HEAD_KEYS.items():
        assert DEFAULTS["mask"][key.split(".")[1]] == parameters[argument].default, key


def _model():
    config = from_dict({
        "detector": "mask_rcnn", "backbone": {"name": "tiny", "weights": "none", "width": 8},
        "input": {"min_size": 64, "max_size": 64, "max_boxes": 3},
        "rpn": {"anchor_sizes": [16, 32], "channels": 16, "pre_nms_top_n_train": 100, "post_nms_top_n_train": 32,
                "pre_nms_top_n_test": 100, "post_nms_top_n_test": 16, "batch_size": 32},
        "roi": {"batch_size": 16, "head_dim": 32},
        "mask": {"channels": 8, "num_convs": 1, "pool_size": 7},
        "test": {"max_detections": 5, "score_threshold": 0.0},
    })
    return registry.build_model(config, CLASSES)


def _batch():
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    gt_masks = np.zeros((2, 3, 64, 64), np.uint8)
    gt_masks[0, 0, 10:30, 12:40] = 1
    return {
        "images": images, "image_shape": np.array([[64, 64], [64, 64]], np.int32),
        "gt_boxes": np.array([[[12, 10, 40, 30], [0, 0, 0, 0], [0, 0, 0, 0]], np.zeros((3, 4))], np.float32),
        "gt_labels": np.array([[2, -1, -1], [-1, -1, -1]], np.int32),  # image 2 has no objects
        "gt_masks": gt_masks, "gt_mask_valid": np.array([[True, False, False], [False] * 3]),
    }


def test_one_train_step_predict_and_save_load(tmp_path):
    keras.utils.set_random_seed(0)
    model = _model()
    assert model.mask_head.num_rois == 4  # roi.batch_size 16 * positive_fraction 0.25
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    logs = model.train_on_batch(_batch(), return_dict=True)
    assert {"rpn_cls_loss", "roi_cls_loss", "mask_loss"} <= set(logs)
    assert all(np.isfinite(v) for v in logs.values())
    # One object with a mask: BCE of near-zero logits is about log 2.
    assert 0.3 < logs["mask_loss"] < 1.0

    inputs = {k: v for k, v in _batch().items() if k in ("images", "image_shape")}
    inputs["scale"] = np.full((2, 2), 0.5, np.float32)  # original images 128x128
    detections = {k: ops.convert_to_numpy(v) for k, v in model.predict_step(inputs).items()}
    assert detections["masks"].shape == (2, 5, 14, 14)
    assert ((detections["masks"] >= 0) & (detections["masks"] <= 1)).all()
    assert detections["boxes"].max() <= 128.0

    path = str(tmp_path / "mask.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded).__name__ == "MaskRCNN" and loaded.mask_head.num_rois == 4
    again = {k: ops.convert_to_numpy(v) for k, v in loaded.predict_step(inputs).items()}
    np.testing.assert_allclose(again["masks"], detections["masks"], atol=1e-5)


@pytest.mark.parametrize("backbone", ["tiny_fpn"])  # multi-level RoIAlign: the static-shape path
def test_train_step_and_predict_under_jax_jit(backbone):
    """Static shapes: the train step and predict_step compile with jax.jit (own process)."""
    import importlib.util
    import json
    import os
    import subprocess
    import sys

    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed: make install-test")
    here = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "KERAS_BACKEND": "jax", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, os.path.join(here, "mask_backend.py"), backbone], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["masks_shape"] == [2, 5, 14, 14] and out["masks_finite"]
    assert np.isfinite(list(out["logs"].values())).all() and out["logs"]["mask_loss"] > 0
