"""ONNX export runs in onnxruntime with the Keras model's detections (boxes to 1e-3,
scores to 1e-4, the same classes and counts), for the tiny backbone, VGG16 and a Fast
R-CNN (proposals as an input); the
class-offset NMS that makes this possible also converts to LiteRT builtin ops.

onnx, tf2onnx and onnxruntime come with the package's `export` extra (.ci/run installs it).
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from detect.config import dump_config, from_dict
from detect.inference.export import export_detector, export_model
from detect.models.registry import build_model
from detect.ops.nms import multiclass_nms

NEEDS_EXPORT = "ONNX tests need the export extra (onnxruntime, tf2onnx): make install-test"
ort = pytest.importorskip("onnxruntime", reason=NEEDS_EXPORT)
pytest.importorskip("tf2onnx", reason=NEEDS_EXPORT)

CLASSES = ["circle", "rectangle", "triangle"]


def settings(backbone, canvas, head_dim):
    return {
        "detector": "faster_rcnn", "backbone": backbone, "input": {"min_size": canvas * 3 // 4, "max_size": canvas},
        "rpn": {"anchor_sizes": [16, 32], "channels": 16, "pre_nms_top_n_test": 100, "post_nms_top_n_test": 20},
        "roi": {"head_dim": head_dim}, "test": {"max_detections": 10, "score_threshold": 0.0},
    }


def feed(canvas, seed=0):
    """Two images: one fills the canvas, one is a 3/4-height image at half scale."""
    rng = np.random.default_rng(seed)
    return {
        "images": rng.uniform(0, 255, (2, canvas, canvas, 3)).astype("float32"),
        "image_shape": np.array([[canvas, canvas], [canvas * 3 // 4, canvas]], "int32"),
        "scale": np.array([[1.0, 1.0], [0.5, 0.5]], "float32"),
    }


def run_onnx(path, inputs):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(None, inputs)))


def assert_same_detections(actual, expected):
    assert set(actual) == set(expected) == {"boxes", "scores", "labels", "num_detections"}
    np.testing.assert_array_equal(actual["num_detections"], expected["num_detections"])
    np.testing.assert_array_equal(actual["labels"], expected["labels"])
    np.testing.assert_allclose(actual["scores"], expected["scores"], atol=1e-4)
    np.testing.assert_allclose(actual["boxes"], expected["boxes"], atol=1e-3)


def test_onnx_export_of_a_model_folder_matches_keras(tmp_path):
    tf.keras.utils.set_random_seed(0)
    config = from_dict(settings({"name": "tiny", "width": 8}, 64, 32))
    model = build_model(config, CLASSES)
    folder = tmp_path / "model"
    folder.mkdir()
    model.save(str(folder / "model.keras"))
    dump_config(config, str(folder / "config.yaml"))
    inputs = feed(64)
    expected = {k: v.numpy() for k, v in model.predict_step(inputs).items()}
    assert expected["num_detections"].tolist() == [10, 10]  # score threshold 0: all D rows
    assert len(np.unique(expected["labels"])) > 1  # several classes: class offsets matter

    path = export_model(str(folder), "onnx", str(tmp_path / "onnx"))
    assert path == str(tmp_path / "onnx" / "model.onnx")
    assert_same_detections(run_onnx(path, inputs), expected)
    with open(tmp_path / "onnx" / "export.json", encoding="utf-8") as f:
        assert json.load(f)["artifact"] == "model.onnx"
    assert sorted(os.listdir(tmp_path)) == ["model", "onnx"]  # no staging folder left


def test_onnx_export_of_vgg16_matches_keras(tmp_path):
    # Random weights, a 96 px canvas (6 x 6 conv5 cells) and a 32-wide fc6/fc7 keep it small.
    tf.keras.utils.set_random_seed(1)
    config = from_dict(settings({"name": "vgg16", "weights": "none"}, 96, 32))
    model = build_model(config, CLASSES)
    inputs = feed(96, seed=1)
    expected = {k: v.numpy() for k, v in model.predict_step(inputs).items()}
    assert expected["num_detections"].tolist() == [10, 10]
    path = export_detector(model, config, "onnx", str(tmp_path / "vgg16"))
    assert_same_detections(run_onnx(path, inputs), expected)


def test_onnx_export_of_fast_rcnn_takes_proposals(tmp_path):
    tf.keras.utils.set_random_seed(2)
    config = from_dict({**settings({"name": "tiny", "width": 8}, 64, 32), "detector": "fast_rcnn"})
    model = build_model(config, CLASSES)
    inputs = feed(64, seed=2)
    proposals = np.zeros((2, 5, 4), "float32")  # all-zero rows are padding
    proposals[0, :3] = [[0, 0, 32, 32], [16, 8, 60, 40], [4, 30, 28, 62]]
    proposals[1, :2] = [[10, 10, 40, 30], [0, 0, 64, 48]]
    inputs["proposals"] = proposals
    expected = {k: v.numpy() for k, v in model.predict_step(inputs).items()}
    assert expected["num_detections"].min() > 0
    path = export_detector(model, config, "onnx", str(tmp_path / "fast"))
    assert_same_detections(run_onnx(path, inputs), expected)


def test_class_offset_nms_converts_to_litert_builtins():
    """The detector's NMS needs no Select TF op (the combined per-class op did)."""
    spec = [tf.TensorSpec([1, 20, 3, 4], tf.float32), tf.TensorSpec([1, 20, 3], tf.float32)]
    function = tf.function(lambda boxes, scores: multiclass_nms(boxes, scores, 5, 0.5, 0.05), input_signature=spec)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], function)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    assert converter.convert()[4:8] == b"TFL3"


def test_ops_inside_loop_bodies_are_checked():
    """The RPN's per-image NMS becomes an ONNX Loop: its body's ops are looked at too."""
    from onnx import helper

    body = helper.make_graph([helper.make_node("NonMaxSuppressionTF", [], [])], "body", [], [])
    loop = helper.make_node("Loop", ["n", "cond"], ["out"], body=body)
    graph = helper.make_graph([loop, helper.make_node("Relu", ["x"], ["y"])], "top", [], [])
    from detect.inference.export import _onnx_nodes

    assert [node.op_type for node in _onnx_nodes(graph)] == ["Loop", "NonMaxSuppressionTF", "Relu"]
