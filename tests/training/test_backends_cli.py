"""`KERAS_BACKEND=jax|torch detect train`, `detect evaluate` and `detect predict` through
the command line on a small shapes set with Faster R-CNN: the
run finishes, the loss is finite, metrics.json holds COCO numbers, and the model trained
on that backend predicts on TensorFlow. (How well it learns is measured in docs/backends.md:
a minute of training on 60 images says little about AP.)"""

import csv
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from test_train import shapes, write_config  # noqa: F401 - shapes is a fixture

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _detect(backend, *args):
    env = {**os.environ, "KERAS_BACKEND": backend, "DETECT_QUIET": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, "-m", "detect.cli", *map(str, args)], env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    return result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_train_evaluate_predict_on_the_backend(backend, tmp_path, shapes):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed: make install-test")
    config = write_config(tmp_path, shapes, epochs=2, steps_per_epoch=6, batch_size=4)
    out = tmp_path / "model"
    printed = _detect(backend, "train", config, "--out", out)
    assert f"in {out}" in printed.strip().splitlines()[-1]
    with open(out / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(float(r["loss"]) == float(r["loss"]) for r in rows)  # finite, not NaN
    _detect(backend, "evaluate", out, "--split", "val", "--out", tmp_path / "eval")
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(metrics["coco"]) >= {"AP", "AP50", "AP75"} and 0.0 <= metrics["coco"]["AP50"] <= 1.0
    # The .keras written on this backend, on TensorFlow (this process's backend).
    images = shapes / "images" / "val"
    _detect("tensorflow", "predict", out, images, "--out", tmp_path / "pred", "--score-threshold", "0")
    detections = json.loads((tmp_path / "pred" / "detections.json").read_text())
    assert len(detections) == len(os.listdir(images))


NO_TENSORFLOW = os.path.join(os.path.dirname(os.path.abspath(__file__)), "no_tensorflow.py")


def _detect_without_tensorflow(backend, *args, expect=0):
    """`detect ARGS` in a process where TensorFlow cannot be imported (no_tensorflow.py)."""
    env = {**os.environ, "KERAS_BACKEND": backend, "DETECT_QUIET": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, NO_TENSORFLOW, *map(str, args)], env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == expect, (result.stdout[-2000:], result.stderr[-3000:])
    return result


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_train_evaluate_predict_benchmark_without_tensorflow(backend, tmp_path, shapes):
    """The PyDataset input path, NumPy resizing, no tf.distribute, no TensorBoard: the
    whole command line on a machine that has the backend but no TensorFlow."""
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed: make install-test")
    config = write_config(tmp_path, shapes, epochs=2, steps_per_epoch=4, batch_size=4)
    with open(config) as f:  # TensorBoard asked for: skipped with a warning, the run goes on
        text = f.read().replace("enabled: false", "enabled: true")
    with open(config, "w") as f:
        f.write(text)
    out = tmp_path / "model"
    trained = _detect_without_tensorflow(backend, "train", config, "--out", out)
    assert "no TensorBoard logs without TensorFlow" in trained.stderr
    assert f"in {out}" in trained.stdout.strip().splitlines()[-1]
    with open(out / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(float(r["val_loss"]) == float(r["val_loss"]) for r in rows)
    assert not (out / "tensorboard").exists()
    summary = json.loads((out / "train_summary.json").read_text())
    assert f"on {backend}" in summary["machine"] and "TF " not in summary["machine"]

    _detect_without_tensorflow(backend, "evaluate", out, "--split", "val", "--out", tmp_path / "eval")
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(metrics["coco"]) >= {"AP", "AP50", "AP75"} and 0.0 <= metrics["coco"]["AP50"] <= 1.0

    images = shapes / "images" / "val"
    _detect_without_tensorflow(backend, "predict", out, images, "--out", tmp_path / "pred", "--score-threshold", "0")
    detections = json.loads((tmp_path / "pred" / "detections.json").read_text())
    assert len(detections) == len(os.listdir(images))

    bench = _detect_without_tensorflow(backend, "benchmark", "--detectors", "faster_rcnn,rcnn", "--backbone", "tiny",
                                       "--runs", "1", "--out", tmp_path / "bench")
    table = (tmp_path / "bench" / "speed.md").read_text()
    measured = [line for line in table.splitlines() if line.startswith("| faster_rcnn | measured")]
    assert len(measured) == 1 and f"on {backend}" in measured[0]
    assert "KERAS_BACKEND=tensorflow" in table  # R-CNN's row says why it was not timed

    refused = _detect_without_tensorflow(backend, "export", out, "--format", "onnx", "--out", tmp_path / "onnx",
                                         expect=2)
    assert refused.stderr.strip().splitlines() == [
        "error: detect export writes TensorFlow graphs (SavedModel, then ONNX / LiteRT): install tensorflow "
        "(pip install tensorflow) and run it with KERAS_BACKEND=tensorflow"]
