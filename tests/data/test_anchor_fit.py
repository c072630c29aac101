"""Anchor fitting: shape IoU, resizing, k-means on known shapes, recall gain, and the CLI."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from detect.cli import main
from detect.data.anchor_fit import (anchor_quality, anchor_shapes, fit_anchors, fit_free, fit_grid,
                                    resized_shapes, shape_iou)
from detect.data.records import Dataset, Record
from detect.errors import DetectError

PAPER_SIZES, PAPER_RATIOS = [128, 256, 512], [0.5, 1.0, 2.0]


def _dataset(shapes_per_image, width=100, height=100):
    """One record per list of (w, h) shapes, boxes placed at the top-left corner."""
    records = [Record(i + 1, f"{i}.jpg", f"/none/{i}.jpg", width, height,
                      [[0, 0, w, h] for w, h in shapes], [1] * len(shapes))
               for i, shapes in enumerate(shapes_per_image)]
    return Dataset(["thing"], records)


def test_shape_iou_by_hand():
    # 20x80 box and a 40x40 anchor on one centre: intersection 20 * 40 = 800,
    # union 1600 + 1600 - 800 = 2400 -> 1/3; against itself 1; 80x20 vs 20x80: 400 / 2800.
    iou = shape_iou([[20, 80]], [[40, 40], [20, 80], [80, 20]])
    np.testing.assert_allclose(iou, [[1 / 3, 1.0, 400 / 2800]])


def test_shape_iou_is_the_box_iou_of_centred_boxes():
    from detect.ops.boxes import pairwise_iou

    rng = np.random.default_rng(1)
    shapes, anchors = rng.uniform(1, 50, (6, 2)), rng.uniform(1, 50, (4, 2))

    def centred(wh):
        return np.concatenate([-wh / 2, wh / 2], axis=1)

    np.testing.assert_allclose(shape_iou(shapes, anchors),
                               np.asarray(pairwise_iou(centred(shapes), centred(anchors))), rtol=1e-5)


def test_anchor_shapes_match_the_detector_anchors():
    from detect.ops.anchors import cell_anchors

    boxes = np.asarray(cell_anchors([16, 64], [0.25, 1.0, 4.0]))
    np.testing.assert_allclose(anchor_shapes([16, 64], [0.25, 1.0, 4.0]),
                               np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1),
                               rtol=1e-6)
    # size 16, ratio 4 (height / width): width 16 / 2 = 8, height 16 * 2 = 32.
    np.testing.assert_allclose(anchor_shapes([16], [4.0]), [[8, 32]])


def test_resized_shapes_follow_the_pipeline_resize():
    dataset = _dataset([[(100, 50)]], width=200, height=100)
    # scale = min(50 / 100, 80 / 200) = 0.4: the image becomes 80x40 and the box 40x20.
    np.testing.assert_allclose(resized_shapes(dataset, 50, 80), [[40, 20]])
    # 3x7 image, min 10 / max 20: scale = min(10 / 3, 20 / 7) = 2.857; 8.57 x 20 rounds to
    # 9 x 20, so a 1x1 box becomes (20 / 7) x (9 / 3) = 2.857 x 3 (per-axis scales).
    odd = _dataset([[(1, 1)]], width=7, height=3)
    np.testing.assert_allclose(resized_shapes(odd, 10, 20), [[20 / 7, 3.0]])
    crowd = Record(2, "c.jpg", "/none/c.jpg", 10, 10, [[0, 0, 5, 5]], [1], iscrowd=[True])
    assert resized_shapes(Dataset(["thing"], [crowd]), 10, 10).shape == (0, 2)


def test_two_known_shapes_grid_and_free():
    # Only 20x80 and 80x20 boxes: one size sqrt(20 * 80) = 40 and ratios 20/80, 80/20.
    shapes = np.array([[20, 80]] * 30 + [[80, 20]] * 10, np.float64)
    sizes, ratios = fit_grid(shapes, 1, 2)
    np.testing.assert_allclose(sizes, [40], rtol=1e-6)
    np.testing.assert_allclose(ratios, [0.25, 4.0], rtol=1e-6)
    assert anchor_quality(shapes, anchor_shapes(sizes, ratios)) == {
        "recall@0.5": 1.0, "recall@0.7": 1.0, "mean_iou": pytest.approx(1.0)}
    np.testing.assert_allclose(sorted(fit_free(shapes, 2).tolist()), [[20, 80], [80, 20]])
    # Two squares 10x10 and 40x40, 2 sizes x 1 ratio: sizes 10 and 40, ratio 1.
    squares = np.array([[10, 10]] * 5 + [[40, 40]] * 5, np.float64)
    sizes, ratios = fit_grid(squares, 2, 1)
    np.testing.assert_allclose(sizes, [10, 40], rtol=1e-6)
    np.testing.assert_allclose(ratios, [1.0], rtol=1e-6)


def _tall_and_wide(seed=0, images=100):
    rng = np.random.default_rng(seed)
    per_image = []
    for _ in range(images):
        tall = [(rng.uniform(15, 30), rng.uniform(100, 160)) for _ in range(2)]
        wide = [(rng.uniform(100, 160), rng.uniform(15, 30))]
        per_image.append(tall + wide)
    return _dataset(per_image, width=400, height=300)


def test_fitted_anchors_raise_recall_on_tall_and_wide_boxes():
    result, shapes = fit_anchors(_tall_and_wide(), PAPER_SIZES, PAPER_RATIOS, 600, 1000)
    default, fitted = result["recall"]["default"], result["recall"]["fitted"]
    assert len(shapes) == result["boxes"] == 300
    assert fitted["recall@0.5"] >= default["recall@0.5"] + 0.10
    assert fitted["mean_iou"] > default["mean_iou"]
    assert len(result["anchor_sizes"]) == 3 and len(result["anchor_ratios"]) == 3
    # Tall (h/w >= 3) and wide (h/w <= 1/3) ratios are both among the fitted ones.
    assert min(result["anchor_ratios"]) <= 1 / 3 and max(result["anchor_ratios"]) >= 3


def test_free_mode_reports_shapes_per_level():
    result, _ = fit_anchors(_tall_and_wide(images=20), PAPER_SIZES, PAPER_RATIOS, 600, 1000, mode="free")
    assert len(result["anchor_shapes"]) == 3
    assert result["recall"]["free"]["recall@0.5"] >= result["recall"]["default"]["recall@0.5"]


def test_no_boxes_and_bad_mode():
    with pytest.raises(DetectError, match="no boxes to fit anchors to"):
        fit_anchors(_dataset([[]]), PAPER_SIZES, PAPER_RATIOS, 600, 1000)
    with pytest.raises(DetectError, match="expected grid or free"):
        fit_anchors(_dataset([[(5, 5)]]), PAPER_SIZES, PAPER_RATIOS, 600, 1000, mode="best")


def test_cli_writes_anchors_json_plot_and_yaml_lines(tmp_path):
    dataset = _tall_and_wide(images=30)
    (tmp_path / "ann.json").write_text(json.dumps(dataset.to_coco()))
    config = tmp_path / "config.yaml"
    config.write_text("input: {min_size: 600, max_size: 1000}\n"
                      "rpn: {anchor_sizes: [128, 256, 512], anchor_ratios: [0.5, 1.0, 2.0]}\n")
    out = tmp_path / "fit" / "anchors.json"
    result = CliRunner().invoke(main, ["data", "anchors", "--format", "coco", "--annotations",
                                       str(tmp_path / "ann.json"), "--config", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert set(written["recall"]) == {"default", "fitted"}
    assert written["recall"]["fitted"]["recall@0.5"] >= written["recall"]["default"]["recall@0.5"] + 0.10
    assert f"  anchor_sizes: [{', '.join(f'{v:g}' for v in written['anchor_sizes'])}]" in result.output
    assert "  anchor_ratios: [" in result.output
    assert (tmp_path / "fit" / "anchors.png").read_bytes()[:4] == b"\x89PNG"
    assert result.output.strip().endswith(f"plot to {tmp_path / 'fit' / 'anchors.png'}")
