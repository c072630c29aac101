"""Export: the SavedModel "serve" signature reproduces model.predict_step, with and without
truncated SVD; Fast R-CNN exports take proposals; LiteRT converts; ONNX without its
packages and bad output folders fail with one clear line."""

import importlib.util
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from detect.config import dump_config, from_dict
from detect.errors import DetectError
from detect.inference.export import export_detector, export_model
from detect.models.registry import build_model

CLASSES = ["circle", "rectangle", "triangle"]
CANVAS = 64


def small_model(detector="faster_rcnn"):
    return build_model(from_dict({
        "detector": detector, "backbone": {"width": 8}, "input": {"min_size": 48, "max_size": CANVAS},
        "rpn": {"anchor_sizes": [16, 32], "channels": 16, "pre_nms_top_n_test": 100, "post_nms_top_n_test": 20},
        "roi": {"head_dim": 32}, "test": {"max_detections": 10, "score_threshold": 0.0},
    }), CLASSES)


def config():
    return from_dict({"input": {"min_size": 48, "max_size": CANVAS}, "backbone": {"width": 8}})


def inputs():
    rng = np.random.default_rng(0)
    return {
        "images": rng.uniform(0, 255, (2, CANVAS, CANVAS, 3)).astype("float32"),
        "image_shape": np.array([[CANVAS, CANVAS], [48, CANVAS]], "int32"),
        "scale": np.array([[1.0, 1.0], [0.5, 0.5]], "float32"),
    }


def serve(path, feed):
    signature = tf.saved_model.load(path).signatures["serve"]
    return {k: v.numpy() for k, v in signature(**{k: tf.constant(v) for k, v in feed.items()}).items()}


def assert_same(actual, expected):
    assert set(actual) == set(expected)
    for key in expected:
        np.testing.assert_allclose(actual[key], expected[key], atol=1e-4, err_msg=key)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    tf.keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("model")
    model = small_model()
    model.save(str(folder / "model.keras"))
    dump_config(config(), str(folder / "config.yaml"))
    expected = {k: v.numpy() for k, v in model.predict_step(inputs()).items()}
    return str(folder), expected


def test_saved_model_serve_matches_detect(model_dir, tmp_path):
    folder, expected = model_dir
    out = str(tmp_path / "exported")
    path = export_model(folder, "saved_model", out)
    assert path == out
    assert expected["num_detections"].tolist() == [10, 10]  # score threshold 0: D = 10 rows
    assert_same(serve(path, inputs()), expected)
    with open(os.path.join(out, "export.json"), encoding="utf-8") as f:
        description = json.load(f)
    assert description["canvas_size"] == [CANVAS, CANVAS]
    assert (description["min_size"], description["max_size"]) == (48, CANVAS)
    assert description["class_names"] == CLASSES
    assert description["endpoint"] == "serve"
    assert description["head_svd_ranks"] is None
    assert description["inputs"]["images"]["shape"] == [None, CANVAS, CANVAS, 3]
    assert set(description["inputs"]) == {"images", "image_shape", "scale"}
    # Nothing but the export itself is left beside it.
    assert os.listdir(tmp_path) == ["exported"]


def test_full_rank_svd_export_matches_detect(model_dir, tmp_path):
    folder, expected = model_dir
    path = export_model(folder, "saved_model", str(tmp_path / "svd"), svd="1000,1000")
    assert_same(serve(path, inputs()), expected)
    with open(os.path.join(path, "export.json"), encoding="utf-8") as f:
        # Clipped to min(in, out): fc6 min(7 * 7 * 64, 32) = 32, fc7 min(32, 32) = 32.
        assert json.load(f)["head_svd_ranks"] == [32, 32]


def test_fast_rcnn_export_takes_proposals(tmp_path):
    tf.keras.utils.set_random_seed(1)
    model = small_model("fast_rcnn")
    feed = inputs()
    proposals = np.zeros((2, 5, 4), "float32")  # zero rows are padding
    proposals[0, :3] = [[0, 0, 32, 32], [16, 8, 60, 40], [4, 30, 28, 62]]
    proposals[1, :2] = [[10, 10, 40, 30], [0, 0, 64, 48]]
    feed["proposals"] = proposals
    expected = {k: v.numpy() for k, v in model.predict_step(feed).items()}
    path = export_detector(model, config(), "saved_model", str(tmp_path / "fast"))
    assert_same(serve(path, feed), expected)
    with open(os.path.join(path, "export.json"), encoding="utf-8") as f:
        assert json.load(f)["inputs"]["proposals"]["shape"] == [None, None, 4]


def test_litert_converts_with_select_tf_ops(model_dir, tmp_path):
    folder, _ = model_dir
    path = export_model(folder, "litert", str(tmp_path / "lite"))
    assert path == str(tmp_path / "lite" / "model.tflite")
    with open(path, "rb") as f:
        assert f.read(8)[4:] == b"TFL3"  # flatbuffer file identifier
    assert sorted(os.listdir(tmp_path / "lite")) == ["export.json", "model.tflite"]
    with open(tmp_path / "lite" / "export.json", encoding="utf-8") as f:
        # RoIAlign's crop_and_resize has no LiteRT builtin: it runs through the Flex delegate.
        # It is the only one: NMS (class-offset, see ops/nms.py) converts to builtins.
        assert json.load(f)["select_tf_ops"] == ["CropAndResize"]


def test_onnx_without_tf2onnx_raises(model_dir, tmp_path, monkeypatch):
    folder, _ = model_dir
    find_spec = importlib.util.find_spec
    hidden = lambda name, *args: None if name == "tf2onnx" else find_spec(name, *args)  # noqa: E731
    monkeypatch.setattr(importlib.util, "find_spec", hidden)
    with pytest.raises(DetectError, match="pip install tf2onnx onnx"):
        export_model(folder, "onnx", str(tmp_path / "onnx"))
    assert not os.path.exists(tmp_path / "onnx")


def test_export_replaces_an_earlier_export(model_dir, tmp_path):
    folder, expected = model_dir
    out = str(tmp_path / "exported")
    export_model(folder, "saved_model", out, svd="2,2")
    export_model(folder, "saved_model", out)
    assert_same(serve(out, inputs()), expected)
    assert os.listdir(tmp_path) == ["exported"]


def test_bad_requests_raise(model_dir, tmp_path):
    folder, _ = model_dir
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("keep me")
    with pytest.raises(DetectError, match="holds no earlier export"):
        export_model(folder, "saved_model", str(occupied))
    assert os.listdir(occupied) == ["notes.txt"]
    with pytest.raises(DetectError, match="--format"):
        export_model(folder, "tfjs", str(tmp_path / "a"))
    with pytest.raises(DetectError, match="--svd"):
        export_model(folder, "saved_model", str(tmp_path / "b"), svd="1024")
    with pytest.raises(DetectError, match="not a model folder"):
        export_model(str(tmp_path / "missing"), "saved_model", str(tmp_path / "c"))
    assert sorted(os.listdir(tmp_path)) == ["occupied"]
