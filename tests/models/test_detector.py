"""CPU smoke tests of Faster R-CNN (TwoStageDetector with an RPN): every backbone trains one step with finite losses, an
image without boxes gives zero box losses, save -> load gives identical predictions."""

import numpy as np
import pytest
import tensorflow as tf

from detect.config import from_dict
from detect.models.registry import build_model

CLASSES = ["circle", "rectangle", "triangle"]


def small_config(backbone="tiny", canvas=64, detector="faster_rcnn", rpn=None, roi=None, test=None):
    """A resolved config for a small detector on a canvas x canvas canvas."""
    return from_dict({
        "detector": detector,
        "backbone": {"name": backbone, "weights": "none", "width": 8},
        "input": {"min_size": canvas, "max_size": canvas},
        "rpn": {"anchor_sizes": [16, 32], "anchor_ratios": [0.5, 1.0, 2.0], "channels": 16, "batch_size": 32,
                "pre_nms_top_n_train": 200, "post_nms_top_n_train": 50, "pre_nms_top_n_test": 100,
                "post_nms_top_n_test": 20, "ignore_border": False, **(rpn or {})},
        "roi": {"batch_size": 16, "head_dim": 32, **(roi or {})},
        "test": {"max_detections": 10, "score_threshold": 0.0, **(test or {})},
    })


def small_model(backbone="tiny", canvas=64, stage="joint", **sections):
    """A random-weight detector built the way `detect train` builds one."""
    model = build_model(small_config(backbone, canvas, **sections), CLASSES)
    model.stage = stage
    return model


def batch(canvas=64, with_boxes=True):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (2, canvas, canvas, 3)).astype("float32")
    gt_boxes = np.zeros((2, 4, 4), "float32")
    gt_labels = -np.ones((2, 4), "int32")
    if with_boxes:
        gt_boxes[0, :2] = [[4, 4, 30, 30], [30, 20, 60, 50]]
        gt_labels[0, :2] = [1, 3]
        gt_boxes[1, 0] = [10, 12, 40, 44]
        gt_labels[1, 0] = 2
    return {
        "images": images,
        "image_shape": np.array([[canvas, canvas], [canvas, canvas - 8]], "int32"),
        "scale": np.ones((2, 2), "float32"),
        "gt_boxes": gt_boxes,
        "gt_labels": gt_labels,
    }


def losses(model, inputs):
    outputs = model(inputs, training=True)
    model.compute_loss(x=inputs, y_pred=outputs)
    return {t.name: float(t.result()) for t in model.metrics}


@pytest.mark.parametrize(
    "backbone,canvas",
    [("tiny", 64), ("vgg16", 64), ("resnet50", 64), pytest.param("resnet101", 64, marks=pytest.mark.slow)],
)
def test_one_train_step_per_backbone(backbone, canvas):
    tf.keras.utils.set_random_seed(0)
    model = small_model(backbone, canvas)
    model.compile(optimizer="sgd")
    history = model.fit(batch(canvas), batch_size=2, epochs=1, verbose=0)
    for key in ("loss", "rpn_cls_loss", "rpn_box_loss", "roi_cls_loss", "roi_box_loss"):
        assert np.isfinite(history.history[key][0]), key
    outputs = model(batch(canvas), training=False)
    m = outputs["rpn"]["anchors"].shape[0]
    # canvas 64 / stride 16 = 4 x 4 cells, 2 sizes x 3 ratios = 6 anchors per cell -> 96.
    if backbone == "tiny":
        assert m == 4 * 4 * 6
    assert outputs["rpn"]["objectness"].shape == (2, m)
    assert outputs["class_logits"].shape == (2, 16, 4)  # RoIs sampled: gt present
    detections = model.predict_step({k: v for k, v in batch(canvas).items() if not k.startswith("gt_")})
    assert detections["boxes"].shape == (2, 10, 4)
    assert detections["labels"].shape == (2, 10)


def test_image_without_boxes_has_zero_box_losses():
    tf.keras.utils.set_random_seed(1)
    model = small_model()
    values = losses(model, batch(with_boxes=False))
    assert values["rpn_box_loss"] == 0.0
    assert values["roi_box_loss"] == 0.0
    assert values["rpn_cls_loss"] > 0.0
    assert values["roi_cls_loss"] > 0.0


def test_sampled_roi_labels_follow_ground_truth():
    tf.keras.utils.set_random_seed(2)
    model = small_model()
    inputs = batch()
    outputs = model(inputs, training=True)
    labels = outputs["roi_labels"].numpy()
    # Ground truth joins the candidates, so each image has a foreground RoI of each object's class.
    assert set(labels[0][labels[0] > 0]) == {1, 3}
    assert set(labels[1][labels[1] > 0]) == {2}
    # At most 25% of 16 = 4 foreground RoIs per image.
    assert ((labels > 0).sum(axis=1) <= 4).all()


def test_stage_selects_losses():
    tf.keras.utils.set_random_seed(3)
    model = small_model(stage="rpn")
    inputs = batch()
    outputs = model(inputs, training=True)
    total = float(model.compute_loss(x=inputs, y_pred=outputs))
    values = {t.name: float(t.result()) for t in model.metrics}
    assert values["roi_cls_loss"] == 0.0
    assert total == pytest.approx(values["rpn_cls_loss"] + values["rpn_box_loss"], rel=1e-5)


def test_save_load_gives_identical_predictions(tmp_path):
    import keras

    tf.keras.utils.set_random_seed(4)
    model = small_model()
    model.compile(optimizer="adam")
    model.fit(batch(), batch_size=2, epochs=1, verbose=0)
    inputs = {k: v for k, v in batch().items() if not k.startswith("gt_")}
    before = {k: v.numpy() for k, v in model.predict_step(inputs).items()}
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    after = {k: v.numpy() for k, v in loaded.predict_step(inputs).items()}
    for key in before:
        np.testing.assert_allclose(after[key], before[key], rtol=1e-5, atol=1e-4)
    assert loaded.class_names == CLASSES


def test_mixed_precision_train_step_is_finite():
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        tf.keras.utils.set_random_seed(5)
        model = small_model()
        model.compile(optimizer="sgd")
        history = model.fit(batch(), batch_size=2, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])
        detections = model.predict_step({k: v for k, v in batch().items() if not k.startswith("gt_")})
        assert detections["boxes"].dtype == tf.float32
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("backbone,frozen,trainable", [
    ("vgg16", "block1_conv1", "block3_conv1"),
    ("resnet50", "conv1_conv", "conv4_block1_1_conv"),
])
def test_set_trainable_keeps_the_build_time_freezing(backbone, frozen, trainable):
    # The alternating schedule toggles parts on and off; Keras propagates
    # `trainable = True` to every sublayer, which must not unfreeze VGG conv1-2 or
    # ResNet conv1-2 and BatchNorm.
    model = small_model(backbone)

    def layer(name):
        for outer in model.backbone.layers:
            for inner in getattr(outer, "layers", [outer]):
                if inner.name == name:
                    return inner
        raise KeyError(name)

    for flags in ((False, True, False), (True, True, True)):
        model.set_trainable(*flags)
    assert not layer(frozen).trainable
    assert layer(trainable).trainable
    if backbone == "resnet50":
        assert not layer("conv4_block1_1_bn").trainable
        res5 = model.roi_heads.box_head.layers[1]  # roi_features -> res5 (conv5_x) -> pool
        assert not res5.get_layer("conv5_block1_1_bn").trainable
        assert res5.get_layer("conv5_block1_1_conv").trainable


def test_legacy_flat_model_file_is_refused_with_a_retrain_line(tmp_path):
    import json
    import zipfile

    from detect.errors import DetectError
    from detect.models.loading import check_model_file

    path = tmp_path / "model.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps({"class_name": "FasterRCNN", "config": {"anchor_sizes": [1]}}))
        archive.writestr("model.weights.h5", b"")
        archive.writestr("metadata.json", "{}")
    with pytest.raises(DetectError, match="earlier version of detect.*retrain"):
        check_model_file(str(path))
