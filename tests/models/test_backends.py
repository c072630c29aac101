"""The detector on JAX and PyTorch against TensorFlow: the same .keras file gives the same
detections on every backend, a model trained on JAX loads and predicts on TensorFlow, and
the compiled train step traces once per canvas over 20 steps of mixed canvas sizes.

Each other backend runs in its own process (tests/models/backend_model.py): the backend
is fixed when Keras is imported.
"""

import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import detect.models.detector  # noqa: F401 - registers the classes load_model looks up
from test_detector import batch, small_model

HERE = os.path.dirname(os.path.abspath(__file__))
BACKENDS = [("jax", "jax"), ("torch", "torch")]
INPUTS = ("images", "image_shape", "scale")


def _run(backend, *args):
    env = {**os.environ, "KERAS_BACKEND": backend, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, os.path.join(HERE, "backend_model.py"), *map(str, args)], env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]


def _require(module):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed: make install-test")


def _assert_same_detections(actual, expected):
    np.testing.assert_array_equal(actual["num_detections"], expected["num_detections"])
    np.testing.assert_array_equal(actual["labels"], expected["labels"])
    np.testing.assert_allclose(actual["boxes"], expected["boxes"], atol=1e-2)
    np.testing.assert_allclose(actual["scores"], expected["scores"], atol=1e-4)


FPN = {"rpn": {"anchor_sizes": [8, 16, 32, 64, 128]}}


@pytest.fixture(scope="module", params=["tiny", "tiny_fpn"])
def trained_on_tensorflow(request, tmp_path_factory):
    """A tiny detector (single map, or FPN) fitted a few steps on TensorFlow (so that
    scores are apart), saved."""
    keras.utils.set_random_seed(3)
    model = small_model(request.param, **(FPN if request.param == "tiny_fpn" else {}))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(batch(), batch_size=2, epochs=15, verbose=0)
    path = tmp_path_factory.mktemp("tf") / "model.keras"
    model.save(path)
    x = batch()
    detections = {k: keras.ops.convert_to_numpy(v) for k, v in model.predict_step({k: x[k] for k in INPUTS}).items()}
    return path, detections


@pytest.mark.parametrize("backend, module", BACKENDS)
def test_a_tensorflow_model_detects_the_same_on_other_backends(backend, module, trained_on_tensorflow, tmp_path):
    _require(module)
    path, expected = trained_on_tensorflow
    assert expected["num_detections"].min() > 0
    _run(backend, "predict", path, tmp_path / "out.npz")
    _assert_same_detections(dict(np.load(tmp_path / "out.npz")), expected)


@pytest.mark.parametrize("backend, module", BACKENDS)
def test_trained_on_another_backend_then_detects_the_same_on_tensorflow(backend, module, tmp_path):
    _require(module)
    path = tmp_path / "model.keras"
    _run(backend, "train", path, tmp_path / "traces.json")
    report = json.loads((tmp_path / "traces.json").read_text())
    assert all(np.isfinite(report["loss"]))
    if backend == "jax":
        # jax.jit traces the step once per input shape: two canvases, two traces.
        assert 1 <= report["traces"] <= 2, report
    _run(backend, "predict", path, tmp_path / "theirs.npz")
    model = keras.saving.load_model(path)
    x = batch()
    ours = {k: keras.ops.convert_to_numpy(v) for k, v in model.predict_step({k: x[k] for k in INPUTS}).items()}
    _assert_same_detections(dict(np.load(tmp_path / "theirs.npz")), ours)


def test_tensorflow_train_step_traces_once_per_canvas(tmp_path):
    sys.path.insert(0, HERE)
    import backend_model

    backend_model.train(tmp_path / "model.keras", tmp_path / "traces.json")
    report = json.loads((tmp_path / "traces.json").read_text())
    assert 1 <= report["traces"] <= 2, report
