"""The ONNX Runtime path (`detect predict --runtime onnx`, `detect.load` of an export):
the Predictor's resize and padding around model.onnx give the Keras path's detections,
for landscape and portrait images on a non-square canvas (model_portrait.onnx)."""

import json

import numpy as np
import pytest

import detect
from detect.config import dump_config, from_dict
from detect.errors import DetectError
from detect.inference.export import export_model
from detect.inference.onnx_runtime import OnnxPredictor
from detect.inference.run import run_predict
from detect.inference.runtimes import load_predictor
from detect.models.registry import build_model

NEEDS_EXPORT = "ONNX tests need the export extra (onnxruntime, tf2onnx): make install-test"
pytest.importorskip("onnxruntime", reason=NEEDS_EXPORT)
pytest.importorskip("tf2onnx", reason=NEEDS_EXPORT)

CLASSES = ["circle", "rectangle", "triangle"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """(model folder, its ONNX export): a tiny Faster R-CNN on a 32x64 (non-square) canvas."""
    import keras

    keras.utils.set_random_seed(0)
    root = tmp_path_factory.mktemp("onnx-runtime")
    config = from_dict({
        "backbone": {"name": "tiny", "width": 8}, "input": {"min_size": 32, "max_size": 64},
        "rpn": {"anchor_sizes": [16, 32], "channels": 16, "pre_nms_top_n_test": 100, "post_nms_top_n_test": 20},
        "roi": {"head_dim": 32}, "test": {"score_threshold": 0.0, "max_detections": 8},
    })
    model_dir = root / "model"
    model_dir.mkdir()
    build_model(config, CLASSES).save(str(model_dir / "model.keras"))
    dump_config(config, str(model_dir / "config.yaml"))
    export_model(str(model_dir), "onnx", str(root / "onnx"))
    return model_dir, root / "onnx"


def pictures():
    """A landscape, a portrait and a small image (uint8 RGB)."""
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, shape, dtype=np.uint8) for shape in ((90, 120, 3), (100, 70, 3), (30, 40, 3))]


def test_onnx_runtime_equals_keras(folders):
    model_dir, export_dir = folders
    description = json.loads((export_dir / "export.json").read_text())
    assert description["canvas_size"] == [32, 64] and description["portrait_artifact"] == "model_portrait.onnx"
    keras_path = detect.load(str(model_dir))
    onnx_path = detect.load(str(export_dir))  # an export folder: ONNX Runtime
    assert isinstance(onnx_path, OnnxPredictor) and onnx_path.class_names == CLASSES
    assert onnx_path.canvases == keras_path.canvases == ((32, 64), (64, 32))
    for want, got in zip(keras_path.predict_batch(pictures()), onnx_path.predict_batch(pictures())):
        assert len(want["scores"]) == len(got["scores"]) > 0
        np.testing.assert_array_equal(got["labels"], want["labels"])
        assert got["class_names"] == want["class_names"]
        np.testing.assert_allclose(got["scores"], want["scores"], atol=1e-4)
        np.testing.assert_allclose(got["boxes"], want["boxes"], atol=1e-2)  # pixels of the original image


def test_predict_cli_path_runs_onnx(folders, tmp_path):
    from PIL import Image

    _, export_dir = folders
    images = tmp_path / "images"
    images.mkdir()
    for i, picture in enumerate(pictures()):
        Image.fromarray(picture).save(images / f"{i}.png")
    result = run_predict(str(export_dir), [str(images)], str(tmp_path / "out"), score_threshold=0.0,
                         runtime="onnx")
    assert result["frames"] == 3 and result["runtime"] == "onnx"
    assert len(json.loads((tmp_path / "out" / "detections.json").read_text())) == 3


def test_runtime_mistakes_are_one_line_errors(folders, tmp_path):
    model_dir, export_dir = folders
    with pytest.raises(DetectError, match=r"not an ONNX export \(export.json is missing\)"):
        load_predictor(str(model_dir), runtime="onnx")
    with pytest.raises(DetectError, match="is an ONNX export: run it with --runtime onnx"):
        load_predictor(str(export_dir), runtime="keras")
    with pytest.raises(DetectError, match="use --runtime keras for bf16"):
        load_predictor(str(export_dir), runtime="onnx", precision="bf16")
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "export.json").write_text(json.dumps({"format": "saved_model"}))
    with pytest.raises(DetectError, match="needs an ONNX export, this folder holds format 'saved_model'"):
        load_predictor(str(saved), runtime="onnx")
