"""`detect predict` and the Python API prepare portrait images as training and `detect
evaluate` do: resized by the rule alone and padded onto the portrait canvas (the transpose
of the landscape one), so a portrait image gets evaluate's detections. Untrained tiny
models; the arithmetic of the resize is written next to each expected value.

Config: min_size 64, max_size 96, canvas [64, 96] -> landscape canvas (64, 96) (height,
width), portrait canvas (96, 64).
"""

import json
import os

import numpy as np
import pytest
from PIL import Image

from detect.config import dump_config, from_dict
from detect.data.images import read_image
from detect.data.pipeline import prepare_image
from detect.data.splits import pad_value
from detect.evaluation.detections import detect_function
from detect.inference.predictor import Predictor, canvas_of
from detect.inference.run import _batches
from detect.models.registry import build_model

CLASSES = ["circle", "rectangle", "triangle"]
LANDSCAPE, PORTRAIT = (64, 96), (96, 64)


def settings(detector):
    return {
        "detector": detector,
        "backbone": {"name": "tiny", "width": 8},
        "input": {"min_size": 64, "max_size": 96, "canvas": [64, 96]},
        "rpn": {"anchor_sizes": [16, 32], "channels": 16, "post_nms_top_n_test": 20},
        "roi": {"head_dim": 32},
        "test": {"score_threshold": 0.0, "max_detections": 5},
        "proposals": {"max_proposals": 8},
    }


def make_model_dir(folder, detector):
    import keras

    keras.utils.set_random_seed(0)
    config = from_dict(settings(detector))
    build_model(config, CLASSES).save(str(folder / "model.keras"))
    dump_config(config, str(folder / "config.yaml"))
    return str(folder)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("faster"), "faster_rcnn")


@pytest.fixture(scope="module")
def predictor(model_dir):
    return Predictor.from_dir(model_dir)


def picture(height, width, seed=0):
    """A (height, width, 3) uint8 image: noise with a bright rectangle."""
    image = np.random.default_rng(seed).integers(0, 120, (height, width, 3), dtype=np.uint8)
    image[height // 4 : height // 2, width // 5 : width // 2] = (230, 60, 40)
    return image


def evaluate_inputs(image):
    """What the evaluation pipeline feeds the model for one image (prepare_image, canvas
    chosen by orientation)."""
    return prepare_image(image, min_size=64, max_size=96, canvas_size=None, pad_value=pad_value("tiny"))


def assert_same_detections(got, expected, atol=1e-4):
    assert list(got["labels"]) == list(expected["labels"])
    np.testing.assert_allclose(got["scores"], expected["scores"], atol=atol)
    np.testing.assert_allclose(got["boxes"], expected["boxes"], atol=atol * 100)


def test_portrait_image_goes_on_the_portrait_canvas_at_the_training_scale(predictor):
    assert predictor.canvases == (LANDSCAPE, PORTRAIT)
    # 120x50 (HxW) portrait: s = min(64 / 50, 96 / 120) = min(1.28, 0.8) = 0.8 -> 96x40,
    # on the (96, 64) portrait canvas. Fitting the (64, 96) landscape canvas instead would
    # cap s at 64 / 120 = 0.533 -> 64x27: a smaller image than training saw.
    portrait = predictor.prepare(picture(120, 50))
    assert portrait["images"].shape == (1, 96, 64, 3) and canvas_of(portrait) == PORTRAIT
    np.testing.assert_array_equal(portrait["image_shape"], [[96, 40]])
    np.testing.assert_allclose(portrait["scale"], [[0.8, 0.8]], rtol=1e-6)
    # 30x75 landscape: s = min(64 / 30, 96 / 75) = min(2.133, 1.28) = 1.28 -> 38.4 -> 38 x 96;
    # (sy, sx) = (38 / 30, 96 / 75) = (1.2667, 1.28).
    landscape = predictor.prepare(picture(30, 75))
    assert landscape["images"].shape == (1, 64, 96, 3) and canvas_of(landscape) == LANDSCAPE
    np.testing.assert_array_equal(landscape["image_shape"], [[38, 96]])
    np.testing.assert_allclose(landscape["scale"], [[38 / 30, 1.28]], rtol=1e-6)
    # 40x60 landscape: s = min(64 / 40, 96 / 60) = 1.6 -> 64x96, the whole landscape canvas.
    np.testing.assert_array_equal(predictor.prepare(picture(40, 60))["image_shape"], [[64, 96]])


@pytest.mark.parametrize("size", [(120, 50), (30, 75), (97, 96), (7, 5), (64, 64)])
def test_prepare_matches_the_pipelines_one_image_preparation(predictor, size):
    # (97, 96): s = min(64 / 96, 96 / 97) = 0.667 -> 64.7 -> 65 x 64, portrait;
    # (7, 5): s = min(64 / 5, 96 / 7) = 12.8 -> 89.6 -> 90 x 64, portrait.
    image = picture(*size)
    got, expected = predictor.prepare(image), evaluate_inputs(image)
    assert set(got) == set(expected)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


def test_mixed_batch_keeps_order_and_traces_once_per_canvas(model_dir):
    predictor = Predictor.from_dir(model_dir)
    images = [picture(30, 75, 1), picture(120, 50, 2), picture(40, 60, 3), picture(97, 96, 4), picture(7, 5, 5)]
    batched = predictor.predict_batch(images)
    assert len(batched) == len(images)
    alone = [predictor.predict(image) for image in images]
    for got, expected in zip(batched, alone):
        assert_same_detections(got, expected)
    assert sum(len(r["scores"]) for r in batched) > 0
    # Batches of 3 portrait and 2 landscape images, then batches of 1 of each: one trace each.
    assert set(predictor._detect) == {LANDSCAPE, PORTRAIT}
    assert [f.tracing_count() for f in predictor._detect.values()] == [1, 1]
    with pytest.raises(ValueError, match="one canvas"):
        predictor.prepare_batch(images[:2])


def test_portrait_detections_are_evaluates(predictor):
    image = picture(120, 50, 6)
    run = detect_function(predictor.model)
    raw = run(evaluate_inputs(image))
    n = int(raw["num_detections"][0])
    assert n > 0
    got = predictor.predict(image)
    expected = {"boxes": raw["boxes"][0, :n], "scores": raw["scores"][0, :n], "labels": raw["labels"][0, :n]}
    assert_same_detections(got, expected)
    # Boxes in the original 120x50 image's pixels.
    assert got["boxes"][:, 2].max() <= 50 + 1e-3 and got["boxes"][:, 3].max() <= 120 + 1e-3


def test_fast_rcnn_proposals_scale_with_the_portrait_resize(tmp_path, monkeypatch):
    import detect.proposals.selective_search as search

    # Fixed "selective search" boxes in original pixels (xyxy).
    boxes = np.array([[5, 10, 40, 100], [0, 0, 50, 120], [10, 60, 30, 90]], np.float32)
    monkeypatch.setattr(search, "selective_search", lambda image, **kwargs: boxes)
    predictor = Predictor.from_dir(make_model_dir(tmp_path, "fast_rcnn"))
    image = picture(120, 50, 7)
    prepared = predictor.prepare(image)
    assert canvas_of(prepared) == PORTRAIT
    # s = 0.8 (see above): [5, 10, 40, 100] -> [4, 8, 32, 80]; [0, 0, 50, 120] -> [0, 0, 40, 96]
    # (the whole 96x40 content); rows 3..7 of max_proposals 8 are zero padding.
    np.testing.assert_allclose(prepared["proposals"][0, :3], [[4, 8, 32, 80], [0, 0, 40, 96], [8, 48, 24, 72]],
                               rtol=1e-6)
    assert prepared["proposals"].shape == (1, 8, 4) and not prepared["proposals"][0, 3:].any()
    inputs = {**evaluate_inputs(image), "proposals": prepared["proposals"]}
    raw = detect_function(predictor.model)(inputs)
    n = int(raw["num_detections"][0])
    expected = {"boxes": raw["boxes"][0, :n], "scores": raw["scores"][0, :n], "labels": raw["labels"][0, :n]}
    assert_same_detections(predictor.predict(image), expected)
    mixed = predictor.predict_batch([picture(30, 75, 8), image])
    assert_same_detections(mixed[1], expected)


def test_batches_group_items_by_key_and_say_where_they_came_from():
    # Keys 1 1 2 1 2 2 1 at positions 0..6, batches of 2: key 1 fills at position 1 ->
    # ([0, 1]); key 2 fills at 4 -> ([2, 4]); key 1 again at 6 -> ([3, 6]); key 2's
    # position 5 waits to the end.
    items = [1, 1, 2, 1, 2, 2, 1]
    assert list(_batches(items, 2, key=lambda x: x)) == [
        ([0, 1], [1, 1]), ([2, 4], [2, 2]), ([3, 6], [1, 1]), ([5], [2])]
    # Leftovers come out in order of their first item; one key is plain batching.
    assert list(_batches([1, 2, 3], 8, key=lambda x: x)) == [([0], [1]), ([1], [2]), ([2], [3])]
    assert list(_batches("abcde", 2, key=lambda x: 0)) == [([0, 1], ["a", "b"]), ([2, 3], ["c", "d"]), ([4], ["e"])]
    assert list(_batches([], 8, key=lambda x: x)) == []


def test_cli_predict_writes_landscape_and_portrait_outputs_in_order(tmp_path, model_dir, predictor):
    from click.testing import CliRunner

    from detect.cli import main

    folder = tmp_path / "images"
    folder.mkdir()
    # Alternating orientations with --batch-size 2: the landscape images run together
    # (a, c), then the portraits (b, d); detections.json keeps the folder's order.
    sizes = {"a_landscape": (30, 75), "b_portrait": (120, 50), "c_landscape": (40, 60), "d_portrait": (90, 40)}
    for i, (name, size) in enumerate(sizes.items()):
        Image.fromarray(picture(*size, 10 + i)).save(folder / f"{name}.png")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["predict", model_dir, str(folder), "--out", str(out),
                                       "--score-threshold", "0", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    entries = json.loads((out / "detections.json").read_text())
    assert [os.path.basename(e["file"]) for e in entries] == [f"{name}.png" for name in sizes]
    for entry, (name, (height, width)) in zip(entries, sizes.items()):
        assert Image.open(entry["annotated"]).size == (width, height)
        expected = predictor.predict(read_image(str(folder / f"{name}.png")))
        assert [d["class"] for d in entry["detections"]] == list(expected["class_names"]), name
        np.testing.assert_allclose([d["score"] for d in entry["detections"]], expected["scores"], atol=1e-4)
        np.testing.assert_allclose([d["box"] for d in entry["detections"]], expected["boxes"], atol=0.01)
        for x1, y1, x2, y2 in (d["box"] for d in entry["detections"]):
            assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height
