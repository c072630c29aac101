"""Feature Pyramid Network: level assignment, per-level anchors, multi-level RoIAlign, the
neck's shapes, per-level proposal NMS, and an FPN detector that trains, saves and loads."""

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

from detect.config import DEFAULTS
from detect.errors import DetectError
from detect.models import registry
from detect.models.fpn import FeaturePyramid
from detect.models.registry import build_model
from detect.models.rpn import RegionProposalNetwork, generate_proposals_multilevel
from detect.ops.box_coder import BoxCoder
from detect.ops.multilevel import MultiLevelRoIAlign, assign_levels
from detect.ops.roi_pool import RoIAlign

from test_detector import CLASSES, batch, small_config


def square(side, x=0.0, y=0.0):
    return [x, y, x + side, y + side]


def test_level_assignment_by_hand():
    boxes = tf.constant([
        square(224),  # 4 + log2(224/224) = 4
        square(223),  # 4 + log2(0.9955) = 3.993 -> 3
        square(112),  # 4 - 1 = 3
        square(448),  # 4 + 1 = 5
        square(56),  # 4 - 2 = 2
        square(28),  # 4 - 3 = 1 -> clamped to 2
        square(1000),  # 4 + log2(4.46) = 6.16 -> clamped to 5
        [10.0, 10.0, 10.0 + 112.0, 10.0 + 448.0],  # sqrt(112 * 448) = 224 -> 4
        [5.0, 5.0, 5.0, 50.0],  # zero area -> log2(1e-8) -> clamped to 2
    ])
    levels = assign_levels(boxes, 2, 5).numpy()
    np.testing.assert_array_equal(levels, [4, 3, 3, 5, 2, 2, 5, 4, 2])
    # The tiny FPN's canonical size 112: a 112 box at level 4, 56 at 3 (4 + log2(0.5)).
    np.testing.assert_array_equal(assign_levels(tf.constant([square(112), square(56)]), 2, 5, 112.0).numpy(), [4, 3])


def test_per_level_anchors_of_one_cell():
    rpn = RegionProposalNetwork(anchor_sizes=(32, 64, 128, 256, 512), strides=(4, 8, 16, 32, 64), channels=8)
    assert rpn.num_anchors == 3  # one size per level x 3 ratios
    # A 64 x 64 canvas: P2 16x16, P3 8x8, P4 4x4, P5 2x2, P6 1x1 cells.
    features = [tf.zeros((1, 64 // s, 64 // s, 8)) for s in (4, 8, 16, 32, 64)]
    levels = rpn.level_anchors(features)
    assert [int(a.shape[0]) for a in levels] == [256 * 3, 64 * 3, 16 * 3, 4 * 3, 1 * 3]
    # P3 cell (0, 0): centre (0.5 * 8, 0.5 * 8) = (4, 4), size 64.
    # ratio 0.5: w = 64 / sqrt(0.5) = 90.5097, h = 64 * sqrt(0.5) = 45.2548
    #   -> [4 - 45.2548, 4 - 22.6274, 4 + 45.2548, 4 + 22.6274]
    # ratio 1: w = h = 64 -> [-28, -28, 36, 36]; ratio 2: the transpose of ratio 0.5.
    expected = [[-41.2548, -18.6274, 49.2548, 26.6274], [-28, -28, 36, 36], [-18.6274, -41.2548, 26.6274, 49.2548]]
    np.testing.assert_allclose(levels[1][:3].numpy(), expected, atol=1e-3)
    # P6 cell (0, 0): centre (32, 32), size 512, ratio 1 -> [32 - 256, 32 - 256, 32 + 256, 32 + 256].
    np.testing.assert_allclose(levels[4][1].numpy(), [-224, -224, 288, 288], atol=1e-3)
    all_anchors = rpn.anchors(features)
    assert all_anchors.shape == (sum(int(a.shape[0]) for a in levels), 4)


def test_pyramid_needs_one_anchor_size_per_level():
    with pytest.raises(ValueError, match="one anchor size per level"):
        RegionProposalNetwork(anchor_sizes=(32, 64), strides=(4, 8, 16, 32, 64))


def _pyramid(canvas=128, channels=5, seed=0):
    rng = np.random.default_rng(seed)
    return [tf.constant(rng.normal(size=(2, canvas // s, canvas // s, channels)), tf.float32) for s in (4, 8, 16, 32)]


def test_multilevel_roi_align_equals_single_level_when_all_rois_map_to_one_level():
    features = _pyramid()
    # Sides 112..223 -> floor(4 + log2(side / 224)) = 3 for every RoI: all pool from P3 (stride 8).
    rois = tf.constant([[square(112, 3, 5), [0, 0, 150, 120], square(223, 1, 2)],
                        [[10, 20, 130, 140], square(200, 7, 9), [30, 0, 200, 100]]], tf.float32)
    multi = MultiLevelRoIAlign(7, (4, 8, 16, 32), sampling_ratio=2)(features, rois)
    single = RoIAlign(7, spatial_scale=1.0 / 8, sampling_ratio=2)(features[1], rois)
    np.testing.assert_allclose(multi.numpy(), single.numpy(), rtol=1e-6, atol=1e-6)


def test_multilevel_roi_align_reads_each_roi_from_its_own_level():
    features = _pyramid()
    rois = tf.constant([[square(40, 3, 5), square(300, 0, 0), square(120, 1, 2), square(230, 9, 1)]], tf.float32)
    features1 = [f[:1] for f in features]
    multi = MultiLevelRoIAlign(7, (4, 8, 16, 32))(features1, rois).numpy()
    # Levels by hand: 40 -> 4 + log2(0.179) = 1.5 -> 2; 300 -> 4.42 -> 4; 120 -> 3.1 -> 3; 230 -> 4.04 -> 4.
    for index, level in enumerate([2, 4, 3, 4]):
        stride = 2**level
        single = RoIAlign(7, spatial_scale=1.0 / stride)(features1[level - 2], rois[:, index:index + 1]).numpy()
        np.testing.assert_allclose(multi[:, index], single[:, 0], rtol=1e-6, atol=1e-6)


def test_neck_levels_strides_and_odd_sizes():
    neck = FeaturePyramid(channels=16)
    # ResNet on 800 x 1333: C2..C5 are 200x334, 100x167, 50x84, 25x42.
    shapes = [(200, 334), (100, 167), (50, 84), (25, 42)]
    inputs = [tf.zeros((1, h, w, 4 * 2**i)) for i, (h, w) in enumerate(shapes)]
    outputs = neck(inputs)
    assert [tuple(o.shape) for o in outputs] == [(1, h, w, 16) for h, w in shapes] + [(1, 13, 21, 16)]
    assert neck.strides == (4, 8, 16, 32, 64)


def test_top_down_path_carries_coarse_features_to_fine_levels():
    neck = FeaturePyramid(channels=4)
    inputs = [tf.zeros((1, 8, 8, 2)), tf.zeros((1, 4, 4, 2)), tf.zeros((1, 2, 2, 2)), tf.ones((1, 1, 1, 2))]
    neck(inputs)
    for layer in neck.lateral + neck.output_convs:  # zero biases, so only C5 gives a signal
        layer.bias.assign(tf.zeros_like(layer.bias))
    p2 = neck(inputs)[0].numpy()
    assert np.abs(p2).sum() > 0  # only C5 is non-zero: P2 sees it through the top-down path


def test_multilevel_nms_runs_within_each_level():
    # Two levels, one anchor each, zero deltas: the proposals are the anchors themselves.
    same = [[10.0, 10.0, 50.0, 50.0]]
    overlap = [[12.0, 10.0, 52.0, 50.0]]  # IoU 0.905 with `same`
    anchors = [tf.constant(same + overlap), tf.constant(same)]
    objectness = [tf.constant([[3.0, 2.0]]), tf.constant([[1.0]])]
    deltas = [tf.zeros((1, 2, 4)), tf.zeros((1, 1, 4))]
    proposals, valid = generate_proposals_multilevel(
        objectness, deltas, anchors, tf.constant([[100, 100]]), coder=BoxCoder(), pre_nms_top_n=10,
        post_nms_top_n=3, nms_iou=0.7,
    )
    # Level 0 keeps the score-3 box and suppresses its overlap; level 1's identical box survives.
    np.testing.assert_array_equal(valid.numpy(), [[True, True, False]])
    np.testing.assert_allclose(proposals.numpy()[0, :2], same + same, atol=1e-4)


def fpn_config(**rpn):
    config = small_config("tiny_fpn", 64, rpn={"anchor_sizes": [8, 16, 32, 64, 128], **rpn},
                          roi={"canonical_size": 112.0})
    config["fpn"]["channels"] = 16
    return config


def test_fpn_detector_trains_one_step_and_round_trips_through_keras_file(tmp_path):
    tf.keras.utils.set_random_seed(0)
    model = build_model(fpn_config(), CLASSES)
    assert isinstance(model.neck, FeaturePyramid) and model.rpn.strides == (4, 8, 16, 32, 64)
    model.compile(optimizer="adam")
    history = model.fit(batch(), batch_size=2, epochs=1, verbose=0)
    for key in ("loss", "rpn_cls_loss", "rpn_box_loss", "roi_cls_loss", "roi_box_loss"):
        assert np.isfinite(history.history[key][0]), key
    inputs = {k: v for k, v in batch().items() if not k.startswith("gt_")}
    outputs = model(inputs)
    # 64 px canvas: (16^2 + 8^2 + 4^2 + 2^2 + 1) cells x 3 ratios = 1023 anchors.
    assert outputs["rpn"]["anchors"].shape == (1023, 4)
    before = {k: v.numpy() for k, v in model.predict_step(inputs).items()}
    path = str(tmp_path / "fpn.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.roi_heads.pool_strides == (4, 8, 16, 32) and loaded.neck.channels == 16
    after = {k: v.numpy() for k, v in loaded.predict_step(inputs).items()}
    for key in before:
        np.testing.assert_allclose(after[key], before[key], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("change,message", [
    ({"rpn": {"anchor_sizes": [16, 32, 64]}}, "one anchor size per level"),
    ({"roi": {"pool": "pool"}}, "roi.pool"),
])
def test_fpn_config_errors_are_one_line(change, message):
    config = fpn_config()
    for section, values in change.items():
        config[section].update(values)
    with pytest.raises(DetectError, match=message):
        build_model(config, CLASSES)


def test_fpn_defaults_equal_constructor_defaults():
    parameters = inspect.signature(FeaturePyramid).parameters
    for key, argument in registry.FPN_KEYS.items():
        section, name = key.split(".")
        assert DEFAULTS[section][name] == parameters[argument].default


def test_benchmark_has_fpn_rows_per_stage_and_refuses_vgg16(tmp_path):
    from detect.benchmark import speed_table

    result = speed_table.run_benchmark(["faster_rcnn_fpn"], backbone="tiny", runs=1, warmup=0, image_size=(64, 64),
                                       out_dir=str(tmp_path), num_images=1)
    (row,) = [r for r in result["rows"] if r["status"] == "ok"]
    assert row["detector"] == "faster_rcnn_fpn"
    for stage in ("proposals", "backbone", "roi_head", "postprocess"):
        assert row[f"{stage}_s"] > 0, stage
    assert "FPN neck (P2-P6" in result["table"]
    result = speed_table.run_benchmark(["faster_rcnn_fpn"], backbone="vgg16", runs=1, warmup=0, image_size=(64, 64),
                                       out_dir=str(tmp_path / "vgg"), num_images=1)
    assert result["rows"][0]["status"] == "unavailable" and "no FPN variant" in result["rows"][0]["note"]


def test_resnet50_fpn_trains_one_step_with_stem_and_batchnorm_frozen():
    tf.keras.utils.set_random_seed(1)
    config = small_config("resnet50_fpn", 64, rpn={"anchor_sizes": [8, 16, 32, 64, 128]})
    config["fpn"]["channels"] = 16
    model = build_model(config, CLASSES)
    # C2..C5 of a 64 px image: 16, 8, 4, 2 cells (strides 4..32).
    assert [tuple(s[1:3]) for s in model.backbone.compute_output_shape((1, 64, 64, 3))] == [
        (16, 16), (8, 8), (4, 4), (2, 2)]
    model.compile(optimizer="sgd")
    history = model.fit(batch(), batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    layers = {layer.name: layer for layer in model.backbone.layers[-1].layers}
    assert not layers["conv1_conv"].trainable and not layers["conv2_block1_1_conv"].trainable
    assert not layers["conv3_block1_1_bn"].trainable and layers["conv3_block1_1_conv"].trainable
