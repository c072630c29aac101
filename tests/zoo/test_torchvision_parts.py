"""The parts behind the torchvision detectors, each pinned by hand-computed cases (torchvision
itself is checked against them end to end in test_torchvision_parity.py)."""

import numpy as np
import pytest
import tensorflow as tf

from detect.ops.anchors import grid_anchors, torchvision_cell_anchors


def test_torchvision_cell_anchors_are_rounded_and_ratio_major():
    cells = torchvision_cell_anchors([32, 64], [0.5, 1.0])
    # ratio 0.5: h = sqrt(0.5) * s = 22.63 / 45.25, w = s / sqrt(0.5) = 45.25 / 90.51; halves
    # rounded: size 32 -> [-23, -11, 23, 11], size 64 -> [-45, -23, 45, 23] (22.627 -> 23,
    # 45.25 -> 45); ratio 1: [-16, -16, 16, 16], [-32, -32, 32, 32]. Ratios outer, sizes inner.
    np.testing.assert_array_equal(cells, [[-23, -11, 23, 11], [-45, -23, 45, 23],
                                          [-16, -16, 16, 16], [-32, -32, 32, 32]])


def test_grid_anchors_at_cell_corners_with_per_axis_strides():
    cells = np.array([[-1, -2, 1, 2]], np.float32)
    anchors = np.asarray(grid_anchors(2, 2, (61, 64), [1], [1], offset=0.0, cells=cells))
    # cells (i, j) at (j * 64, i * 61): (0, 0), (64, 0), (0, 61), (64, 61), row-major.
    np.testing.assert_array_equal(anchors, [[-1, -2, 1, 2], [63, -2, 65, 2], [-1, 59, 1, 63], [63, 59, 65, 63]])


def test_torchvision_anchor_stride_is_canvas_over_grid():
    from detect.models.rpn import RegionProposalNetwork

    rpn = RegionProposalNetwork(anchor_sizes=(32, 64), strides=(32, 64), anchor_rule="torchvision", channels=8)
    # An 800 x 1216 canvas: the stride-32 map has 25 x 38 cells, its max-pooled level 13 x 19;
    # torchvision's stride of that level is (800 // 13, 1216 // 19) = (61, 64).
    features = [np.zeros((1, 25, 38, 8), np.float32), np.zeros((1, 13, 19, 8), np.float32)]
    level0, level1 = (np.asarray(a) for a in rpn.level_anchors(features))
    assert level0.shape == (25 * 38 * 3, 4) and level1.shape == (13 * 19 * 3, 4)
    # ratio 0.5 of size 64: [-45, -23, 45, 23]; cell (1, 1) of level 1 at (64, 61).
    np.testing.assert_array_equal(level1[(19 + 1) * 3], [64 - 45, 61 - 23, 64 + 45, 61 + 23])


def test_roi_align_aligned_false_has_no_half_cell_shift():
    from detect.ops.roi_pool import roi_align_flat

    # Feature value = x (column index). RoI x 1..3, y 0..2 at scale 1, one bin, 2 x 2 samples:
    # aligned=False samples x = 1 + 0.5 and 1 + 1.5 -> mean 2.0; aligned=True shifts them by
    # -0.5 -> x = 1.0, 2.0 -> 1.5.
    features = np.tile(np.arange(6, dtype=np.float32)[None, None, :, None], (1, 6, 1, 1))
    boxes = np.array([[1, 0, 3, 2]], np.float32)
    index = np.zeros((1,), np.int32)
    for aligned, expected in ((False, 2.0), (True, 1.5)):
        pooled = roi_align_flat(features, boxes, index, 1, 1.0, 2, aligned=aligned, method="gather")
        assert float(np.asarray(pooled)[0, 0, 0, 0]) == pytest.approx(expected)
    # aligned=False: an RoI under one cell counts as one cell wide (torchvision's max(w, 1)):
    # x 2..2.2 -> width 1 -> samples at 2.25, 2.75 -> 2.5.
    thin = np.array([[2, 0, 2.2, 2]], np.float32)
    pooled = roi_align_flat(features, thin, index, 1, 1.0, 2, aligned=False, method="gather")
    assert float(np.asarray(pooled)[0, 0, 0, 0]) == pytest.approx(2.5)


def test_torchvision_level_rule():
    from detect.ops.multilevel import assign_levels

    # floor(4 + log2(sqrt(area) / 224) + 1e-6): side 224 -> 4, 112 -> 3, 447 -> 4, 448 -> 5,
    # 10 -> clamped to 2, 5000 -> clamped to 5.
    sides = [224, 112, 447, 448, 10, 5000]
    boxes = np.array([[0, 0, s, s] for s in sides], np.float32)
    levels = np.asarray(assign_levels(boxes, 2, 5, rule="torchvision"))
    np.testing.assert_array_equal(levels, [4, 3, 4, 5, 2, 5])


def test_postprocess_drops_boxes_under_the_min_size():
    from detect.models.postprocess import postprocess_detections
    from detect.ops.box_coder import BoxCoder

    # Two RoIs, one class, zero deltas: a 10 x 10 box and a 0.005-wide one (after clipping).
    rois = np.array([[[0, 0, 10, 10], [3, 3, 3.005, 9]]], np.float32)
    scores = np.array([[[0.9], [0.8]]], np.float32)
    deltas = np.zeros((1, 2, 1, 4), np.float32)
    args = dict(coder=BoxCoder((10, 10, 5, 5)), score_threshold=0.0, nms_iou=0.5, max_detections=5)
    kept = postprocess_detections(scores, deltas, rois, np.ones((1, 2), bool), np.array([[20, 20]]), None,
                                  **args)
    assert int(kept["num_detections"][0]) == 2
    kept = postprocess_detections(scores, deltas, rois, np.ones((1, 2), bool), np.array([[20, 20]]), None,
                                  min_box_size=0.01, **args)
    assert int(kept["num_detections"][0]) == 1


def test_fpn_takes_maps_of_one_stride_without_upsampling():
    from detect.models.fpn import FeaturePyramid

    fpn = FeaturePyramid(channels=4, num_inputs=2, input_strides=(32, 32))
    outputs = fpn([np.ones((1, 5, 7, 3), np.float32), np.ones((1, 5, 7, 6), np.float32)])
    assert [tuple(o.shape) for o in outputs] == [(1, 5, 7, 4), (1, 5, 7, 4), (1, 3, 4, 4)]
    assert fpn.strides == (32, 32, 64)


def test_torchvision_resize_sizes_by_hand():
    from detect.data.transforms import resize, torchvision_resized_shape

    # 300 x 451 -> scale 800 / 300 -> 800.0 x 1202.67 -> floor 800 x 1202; 899 x 1601 ->
    # 1333 / 1601 wins -> 748.5 x 1333.0 -> 748 x 1333; 1 x 1 -> 800 x 800.
    for (h, w), expected in (((300, 451), (800, 1202)), ((899, 1601), (748, 1333)), ((1, 1), (800, 800))):
        assert tuple(int(v) for v in torchvision_resized_shape(h, w, 800, 1333)) == expected
    image = tf.zeros((300, 451, 3), tf.uint8)
    resized, _, scale = resize(image, tf.zeros((0, 4)), 800, 1333, rule="torchvision")
    assert tuple(resized.shape) == (800, 1202, 3)
    np.testing.assert_allclose(scale.numpy(), [800 / 300, 1202 / 451], rtol=1e-6)


def test_per_image_canvas_pipeline_pads_each_batch_to_its_largest_image_rounded_to_32(tmp_path):
    from detect.data.pipeline import make_dataset
    from detect.data.records import Dataset, Record
    import cv2

    records = []
    for i, (h, w) in enumerate(((40, 70), (100, 50))):
        path = tmp_path / f"{i}.png"
        cv2.imwrite(str(path), np.full((h, w, 3), 200, np.uint8))
        records.append(Record(image_id=i + 1, file_name=path.name, path=str(path), width=w, height=h))
    dataset = Dataset(classes=["a"], records=records, source=str(tmp_path))
    pad = (123.675, 116.28, 103.53)
    batches = list(make_dataset(dataset, batch_size=2, min_size=60, max_size=100, canvas_size="per_image",
                                pad_value=pad, resize_rule="torchvision"))
    images = batches[0]["images"].numpy()
    # 40 x 70 -> scale min(60/40, 100/70) = 1.4286 -> 57 x 100; 100 x 50 -> min(60/50, 100/100) = 1 -> 100 x 50;
    # the batch: (100, 100) rounded up to 32 -> 128 x 128.
    assert images.shape == (2, 128, 128, 3)
    np.testing.assert_array_equal(batches[0]["image_shape"].numpy(), [[57, 100], [100, 50]])
    np.testing.assert_allclose(np.unique(images[0, 57:, :, :].reshape(-1, 3), axis=0), [pad], rtol=1e-6)  # padding
    np.testing.assert_allclose(images[0, :57, :100], 200.0, atol=1e-3)


def test_canvas_key_takes_per_image_and_refuses_other_words():
    from detect.config import from_dict
    from detect.errors import DetectError

    assert from_dict({"input": {"canvas": "per_image"}})["input"]["canvas"] == "per_image"
    with pytest.raises(DetectError, match=r"`input.canvas` must be \[height, width\], per_image or null"):
        from_dict({"input": {"canvas": "fit"}})
