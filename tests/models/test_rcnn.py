"""R-CNN: context warping by hand, output shapes, detections from hand-set SVM and
regressor weights, save -> load round trip, ridge regressors, and a tiny end-to-end run."""

import json
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml

from detect.ops.box_coder import BoxCoder
from detect.errors import DetectError
from detect.models.rcnn import RCNN, context_boxes, warp_regions
from detect.training.rcnn_train import fit_box_regressors

CLASSES = ["circle", "rectangle", "triangle"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def small_model(**overrides):
    kwargs = dict(
        class_names=CLASSES, canvas_size=(64, 64), backbone="tiny", backbone_width=4, crop_size=16, context=2,
        chunk_size=4, regions_per_image=8, score_threshold=0.05, nms_iou=0.3, max_detections=5,
    )
    kwargs.update(overrides)
    return RCNN(**kwargs)


def inputs(with_gt=False):
    rng = np.random.default_rng(0)
    proposals = np.zeros((2, 6, 4), "float32")
    proposals[0, :3] = [[0, 0, 20, 20], [8, 0, 28, 20], [30, 30, 50, 46]]
    out = {
        "images": rng.uniform(0, 255, (2, 64, 64, 3)).astype("float32"),
        "image_shape": np.array([[64, 60], [64, 64]], "int32"),
        "scale": np.full((2, 2), 2.0, "float32"),
        "proposals": proposals,
    }
    if with_gt:
        out["gt_boxes"] = np.array([[[2, 2, 20, 22], [30, 30, 50, 46]], [[10, 12, 40, 44], [0, 0, 0, 0]]], "float32")
        out["gt_labels"] = np.array([[1, 3], [2, -1]], "int32")
    return out


def test_context_boxes_by_hand():
    # crop 64, context 16: factor 64 / (64 - 32) = 2 about the centre (26, 18):
    # width 32 -> 64, height 16 -> 32.
    grown = context_boxes(tf.constant([[10.0, 10.0, 42.0, 26.0]]), 64, 16)
    np.testing.assert_allclose(grown.numpy(), [[-6.0, 2.0, 58.0, 34.0]])


def test_warp_samples_at_output_cell_centres():
    # Pixel value = column index. Box columns [8, 16) warped to 4 samples: centres at
    # 8 + (i + 0.5) * 2 = 9, 11, 13, 15, i.e. pixel indices 8.5, 10.5, 12.5, 14.5.
    image = np.tile(np.arange(32, dtype="float32")[None, :, None], (32, 1, 3))[None]
    crops = warp_regions(image, tf.constant([[8.0, 4.0, 16.0, 12.0]]), tf.constant([0]), 4, 0)
    np.testing.assert_allclose(crops.numpy()[0, 2, :, 0], [8.5, 10.5, 12.5, 14.5], atol=1e-4)
    # The whole canvas warped to its own size is the canvas.
    whole = warp_regions(image, tf.constant([[0.0, 0.0, 32.0, 32.0]]), tf.constant([0]), 32, 0)
    np.testing.assert_allclose(whole.numpy(), image, atol=1e-3)


def test_outputs_have_the_documented_shapes_and_zero_padding():
    tf.keras.utils.set_random_seed(0)
    model = small_model()
    assert model.feature_dim == model.regression_dim == 1 * 1 * 32  # 16 px crop / 16, 8 * width
    out = model(inputs(), training=False)
    assert out["svm_scores"].shape == (2, 6, 3)
    assert out["box_deltas"].shape == (2, 6, 3, 4)
    assert out["class_logits"].shape == (2, 6, 4)
    assert not out["class_logits"].numpy()[0, 3:].any() and not out["class_logits"].numpy()[1].any()
    # Chunks of 4 crops give the same features as one pass over all of them.
    boxes = tf.constant(inputs()["proposals"][0, :3])
    ids = tf.zeros([3], tf.int32)
    chunked, _ = model.chunked_region_features(inputs()["images"], boxes, ids)
    direct, _ = model.region_features(inputs()["images"], boxes, ids)
    np.testing.assert_allclose(chunked.numpy(), direct.numpy(), atol=1e-5)


def test_fine_tuning_step_samples_regions_of_the_gt_classes():
    tf.keras.utils.set_random_seed(1)
    model = small_model()
    model.compile(optimizer="adam")
    history = model.fit(inputs(with_gt=True), batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["cls_loss"][0])
    labels = model(inputs(with_gt=True), training=True)["roi_labels"].numpy()
    assert labels.shape == (2, 8)
    # Image 0 has gt of classes 1 and 3, with more positive regions than the quota of 2:
    # which two are drawn depends on the random keys, their classes do not.
    assert set(labels[0][labels[0] > 0]) <= {1, 3} and (labels[0] > 0).sum() == 2
    assert set(labels[1][labels[1] > 0]) == {2}
    assert ((labels > 0).sum(axis=1) <= 2).all()  # 25% of 8 regions


def test_detections_from_hand_set_svms_and_regressors():
    model = small_model()
    d, k = model.feature_dim, model.num_classes
    model.set_svms(np.zeros((d, k)), np.array([2.0, -5.0, -5.0]))  # only class 1 passes 0.05
    bias = np.zeros(4 * k)
    bias[:4] = [0.1, 0.0, math.log(2.0), 0.0]  # class 1: shift by 0.1 w, double the width
    model.set_box_regressors(np.zeros((d, 4 * k)), bias)
    out = {key: v.numpy() for key, v in model.predict_step(inputs()).items()}
    # [30, 30, 50, 46]: w 20, centre x 40 -> 42, width 40 -> [22, 30, 62, 46], clipped to
    # the content width 60 -> [22, 30, 60, 46], / scale 2 -> [11, 15, 30, 23].
    # [0, 0, 20, 20] -> [-8, 0, 32, 20] -> [0, 0, 32, 20]; [8, 0, 28, 20] -> [0, 0, 40, 20];
    # their IoU 640 / 800 = 0.8 > 0.3, so NMS keeps one of the two.
    assert out["num_detections"].tolist() == [2, 0]
    np.testing.assert_array_equal(out["labels"][0, :2], [1, 1])
    np.testing.assert_allclose(out["scores"][0, :2], [1 / (1 + math.exp(-2))] * 2, rtol=1e-5)
    boxes = out["boxes"][0, :2].tolist()
    assert [11.0, 15.0, 30.0, 23.0] in boxes
    assert [0.0, 0.0, 16.0, 10.0] in boxes or [0.0, 0.0, 20.0, 10.0] in boxes
    assert not out["boxes"][1].any() and not out["labels"][1].any()


def test_no_proposals_give_no_detections():
    model = small_model(scoring="softmax", score_threshold=0.0)
    empty = dict(inputs(), proposals=np.zeros((2, 0, 4), "float32"))
    out = model.predict_step(empty)
    assert out["num_detections"].numpy().tolist() == [0, 0]
    assert out["boxes"].shape == (2, 5, 4)


def test_save_load_gives_identical_detections(tmp_path):
    tf.keras.utils.set_random_seed(4)
    model = small_model(score_threshold=0.0)
    model.compile(optimizer="adam")
    model.fit(inputs(with_gt=True), batch_size=2, epochs=1, verbose=0)
    rng = np.random.default_rng(4)
    model.set_svms(rng.normal(0, 0.1, (model.feature_dim, 3)), rng.normal(0, 1, 3))
    model.set_box_regressors(rng.normal(0, 0.01, (model.regression_dim, 12)), rng.normal(0, 0.1, 12))
    before = {k: v.numpy() for k, v in model.predict_step(inputs()).items()}
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    after = {k: v.numpy() for k, v in loaded.predict_step(inputs()).items()}
    assert before["num_detections"][0] > 0
    for key in before:
        np.testing.assert_allclose(after[key], before[key], rtol=1e-5, atol=1e-4)
    assert loaded.class_names == CLASSES and loaded.scoring == "svm" and not loaded.use_rpn


def test_vgg16_reads_fc7_for_svms_and_pool5_for_boxes():
    model = small_model(backbone="vgg16", crop_size=64, context=4, head_dim=16)
    # 64 px crop -> conv5_3 at 4 x 4 -> pool5 2 x 2 x 512 = 2048; fc7 width 16.
    assert (model.feature_dim, model.regression_dim) == (16, 2048)
    with pytest.raises(DetectError, match="crop_size"):
        small_model(backbone="vgg16", crop_size=48)
    with pytest.raises(DetectError, match="context"):
        small_model(context=8)


class _Store:
    def __init__(self, features, boxes, best_box, best_class):
        self.features = features
        self.meta = {
            "reg_rows": np.arange(len(features)), "dims": np.array([features.shape[1]] * 2),
            "boxes": boxes, "best_box": best_box, "best_class": best_class,
        }

    def regression_features(self, positions):
        return self.features[positions]


def test_ridge_regressors_fold_scaling_and_standardization_into_the_layer():
    rng = np.random.default_rng(0)
    features = rng.normal(0, 1, (300, 5)).astype("float32")
    boxes = np.concatenate([rng.uniform(0, 50, (300, 2)), rng.uniform(60, 100, (300, 2))], axis=1).astype("float32")
    deltas = features @ rng.normal(0, 0.05, (5, 4)) + [0.02, -0.01, 0.1, 0.05]
    coder = BoxCoder()
    best_box = coder.decode(deltas.astype("float32"), boxes).numpy()
    store = _Store(features, boxes, best_box, np.ones(300, np.int16))  # class 1 only
    r = {"feature_norm": 20.0, "ridge_lambda": 1e-6, "ridge_max_samples": 20000}
    kernel, bias = fit_box_regressors(store, 2, coder, r)
    np.testing.assert_allclose(features @ kernel[:, :4] + bias[:4], deltas, atol=1e-3)
    assert not kernel[:, 4:].any() and not bias[4:].any()  # class 2 has no samples
    # A huge lambda leaves only the mean delta.
    kernel, bias = fit_box_regressors(store, 2, coder, {**r, "ridge_lambda": 1e12})
    np.testing.assert_allclose(bias[:4], deltas.mean(axis=0), atol=1e-4)


@pytest.fixture(scope="module")
def tiny_shapes(tmp_path_factory):
    from detect.data.formats import load_dataset
    from detect.data.shapes import generate_shapes
    from detect.proposals.cache import compute_proposals

    out = tmp_path_factory.mktemp("shapes")
    generate_shapes(str(out), num_images=20, image_size=64, seed=5, progress=False)
    for split in ("train", "val"):
        dataset = load_dataset("coco", str(out / f"annotations/{split}.json"), images=str(out / "images"))
        compute_proposals(dataset, str(out / f"proposals_{split}.npz"), mode="fast", max_side=64,
                          max_proposals=40, workers=1, progress=False)
    return out


def test_train_rcnn_end_to_end(tmp_path, tiny_shapes):
    from detect.config import load_config
    from detect.inference.predictor import Predictor
    from detect.training.train import train

    s = tiny_shapes
    config = {
        "_base_": os.path.join(ROOT, "configs/rcnn/tiny_shapes.yaml"),
        "backbone": {"width": 4},
        "dataset": {
            "train": {"annotations": str(s / "annotations/train.json"), "images": str(s / "images")},
            "val": {"annotations": str(s / "annotations/val.json"), "images": str(s / "images")},
        },
        "input": {"min_size": 64, "max_size": 64},
        "proposals": {"train": str(s / "proposals_train.npz"), "val": str(s / "proposals_val.npz"),
                      "max_proposals": 40, "max_side": 64, "mode": "fast"},
        "rcnn": {"crop_size": 16, "context": 2, "chunk_size": 64, "fg_per_batch": 8, "bg_per_batch": 24,
                 "initial_negatives": 100},
        "training": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 4, "warmup_steps": 1,
                     "time_budget_minutes": None},
        "callbacks": {"tensorboard": {"enabled": False}},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    out = str(tmp_path / "model")
    train(load_config(str(path)), out)
    with open(os.path.join(out, "rcnn_phases.json")) as f:
        phases = json.load(f)
    assert set(phases["seconds"]) == {"finetune", "features", "svms", "regressors", "save"}
    assert set(phases["hard_negative_mining"]) == {"1", "2", "3"}
    assert not os.path.exists(os.path.join(out, "feature_cache"))
    assert os.path.isfile(os.path.join(out, "finetune", "history.csv"))
    predictor = Predictor.from_dir(out)
    assert isinstance(predictor.model, RCNN) and predictor.model.scoring == "svm"
    image = np.zeros((64, 64, 3), np.uint8)
    image[10:40, 20:50] = 255
    result = predictor.predict(image)
    assert result["boxes"].shape[1:] == (4,) and len(result["class_names"]) == len(result["scores"])
