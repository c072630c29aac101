"""ONNX export of a Mask R-CNN runs in onnxruntime with the Keras model's detections and masks."""

import json

import numpy as np
import pytest
import tensorflow as tf

from detect.config import from_dict
from detect.inference.export import export_detector
from detect.models.registry import build_model

NEEDS_EXPORT = "ONNX tests need the export extra (onnxruntime, tf2onnx): make install-test"
ort = pytest.importorskip("onnxruntime", reason=NEEDS_EXPORT)
pytest.importorskip("tf2onnx", reason=NEEDS_EXPORT)


def test_onnx_mask_rcnn_matches_keras(tmp_path):
    tf.keras.utils.set_random_seed(0)
    config = from_dict({
        "detector": "mask_rcnn", "backbone": {"name": "tiny", "width": 8}, "input": {"min_size": 48, "max_size": 64},
        "rpn": {"anchor_sizes": [16, 32], "channels": 16, "pre_nms_top_n_test": 100, "post_nms_top_n_test": 20},
        "roi": {"head_dim": 32}, "mask": {"channels": 8, "num_convs": 2, "pool_size": 7},
        "test": {"max_detections": 10, "score_threshold": 0.0},
    })
    model = build_model(config, ["circle", "rectangle", "triangle"])
    rng = np.random.default_rng(0)
    inputs = {"images": rng.uniform(0, 255, (2, 64, 64, 3)).astype("float32"),
              "image_shape": np.array([[64, 64], [48, 64]], "int32"),
              "scale": np.array([[1.0, 1.0], [0.5, 0.5]], "float32")}
    expected = {k: v.numpy() for k, v in model.predict_step(inputs).items()}
    path = export_detector(model, config, "onnx", str(tmp_path / "onnx"))
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    actual = dict(zip(names, session.run(None, inputs)))
    assert set(actual) == {"boxes", "scores", "labels", "num_detections", "masks"}
    np.testing.assert_array_equal(actual["labels"], expected["labels"])
    np.testing.assert_allclose(actual["boxes"], expected["boxes"], atol=1e-3)
    assert actual["masks"].shape == (2, 10, 14, 14)
    np.testing.assert_allclose(actual["masks"], expected["masks"], atol=1e-4)
    with open(tmp_path / "onnx" / "export.json", encoding="utf-8") as f:
        assert "masks" in json.load(f)["outputs"]
