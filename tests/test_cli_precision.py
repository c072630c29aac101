"""`--precision` (predict, evaluate, benchmark) and `--runtime` (predict) reach the library
functions; bad values are one-line usage errors."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from detect.cli import main


def run(*args):
    return CliRunner().invoke(main, list(args))


def capture(monkeypatch, module, name, result):
    """Replace module.name by a function recording its keyword arguments; returns them."""
    import importlib

    seen = {}

    def fake(*args, **kwargs):
        seen.update(kwargs, args=args)
        return result

    monkeypatch.setattr(importlib.import_module(module), name, fake)
    return seen


def test_predict_passes_precision_and_runtime(monkeypatch, tmp_path):
    seen = capture(monkeypatch, "detect.inference.run", "run_predict",
                   {"frames": 1, "seconds": 1.0, "frames_per_second": 1.0, "batch_size": 8, "model_seconds": 0.5,
                    "runtime": "onnx", "precision": "float32"})
    result = run("predict", str(tmp_path), "image.jpg", "--runtime", "onnx")
    assert result.exit_code == 0, result.output
    assert seen["runtime"] == "onnx" and seen["precision"] is None
    assert "(batches of 8; model 0.5 s; onnx runtime)" in result.output
    result = run("predict", str(tmp_path), "image.jpg", "--precision", "bf16")
    assert result.exit_code == 0, result.output
    assert seen["runtime"] == "keras" and seen["precision"] == "bf16"


def test_evaluate_and_benchmark_pass_precision(monkeypatch, tmp_path):
    seen = capture(monkeypatch, "detect.evaluation.evaluate_model", "evaluate_model", {})
    monkeypatch.setattr("detect.evaluation.report.format_table", lambda metrics: "table")
    monkeypatch.setattr("detect.evaluation.report.format_errors", lambda path: "errors")
    assert run("evaluate", str(tmp_path), "--precision", "bf16").exit_code == 0
    assert seen["precision"] == "bf16"
    bench = capture(monkeypatch, "detect.benchmark.speed_table", "run_benchmark", {"table": "speed"})
    assert run("benchmark", "--backbone", "tiny", "--precision", "bf16", "--out", str(tmp_path)).exit_code == 0
    assert bench["precision"] == "bf16"
    assert run("benchmark", "--backbone", "tiny", "--out", str(tmp_path)).exit_code == 0
    assert bench["precision"] == "float32"


@pytest.mark.parametrize("command", [["predict", "m", "x.jpg"], ["evaluate", "m"], ["benchmark"]])
def test_bad_precision_is_one_usage_line(command):
    result = run(*command, "--precision", "fp16")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "Invalid value for '--precision': 'fp16' is not one of 'float32', 'bf16'." in result.stderr


def test_precision_with_a_detections_file_is_refused(tmp_path):
    result = run("evaluate", "--detections", "d.json", "--annotations", "a.json", "--precision", "bf16")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --precision goes with MODEL_DIR: a detections file is scored as it is"


def test_predict_bf16_end_to_end(make_model_dir, tmp_path):
    model_dir = make_model_dir(["circle", "square"])
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "one.png")
    out = tmp_path / "out"
    result = run("predict", str(model_dir), str(tmp_path / "one.png"), "--out", str(out), "--precision", "bf16",
                 "--score-threshold", "0")
    assert result.exit_code == 0, result.output
    assert "; bf16)" in result.output
    assert len(json.loads((out / "detections.json").read_text())) == 1
