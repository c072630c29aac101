"""Speed table: a real tiny run writes the table / CSV / chart; the helpers are checked on
hand-computed cases (canvas rounding, FLOP counts, medians, speed-ups). No timing asserts."""

import csv
import os

import numpy as np
import pytest
import tensorflow as tf

from detect.benchmark import speed_table
from detect.benchmark.speed_table import (
    STAGES,
    canvas_for_images,
    graph_flops,
    load_images,
    median_seconds,
    random_images,
    run_benchmark,
)
from detect.errors import DetectError


def test_tiny_faster_rcnn_and_unknown_detector(tmp_path):
    result = run_benchmark(
        ["faster_rcnn", "no_such_detector"], backbone="tiny", runs=1, warmup=1, image_size=(128, 128),
        out_dir=str(tmp_path), num_images=1,
    )
    for key, name in (("markdown", "speed.md"), ("csv", "speed.csv"), ("chart", "speed.png")):
        assert result["paths"][key] == os.path.join(str(tmp_path), name)
        assert os.path.getsize(result["paths"][key]) > 0
    for column in ("proposals (ms)", "backbone (ms)", "RoI head (ms)", "postprocess (ms)", "detect() (ms)"):
        assert column in result["table"]
    measured = [r for r in result["rows"] if r["status"] == "ok"]
    assert [r["detector"] for r in measured] == ["faster_rcnn"]
    row = measured[0]
    for stage in STAGES:
        assert row[f"{stage}_s"] > 0
        assert row[f"{stage}_gflop"] >= 0
    assert row["detect_s"] > 0
    assert row["backbone_gflop"] > 0 and row["roi_head_gflop"] > 0
    unknown = [r for r in result["rows"] if r["detector"] == "no_such_detector"]
    assert unknown and unknown[0]["status"] == "unavailable"
    assert "| no_such_detector | unavailable: not available" in result["table"]
    # The paper row sits beside the measured one: 47 s / 0.198 s = 237.4x.
    paper = [r for r in result["rows"] if r["status"] == "paper"]
    assert paper[0]["detector"] == "faster_rcnn"
    assert paper[0]["speedup_vs_rcnn"] == pytest.approx(237.37, abs=0.01)
    with open(result["paths"]["csv"], newline="") as f:
        lines = list(csv.DictReader(f))
    assert [line["status"] for line in lines] == ["ok", "paper", "unavailable"]
    with open(result["paths"]["markdown"]) as f:
        assert "## Time per image" in f.read()


def fake_timer(seconds):
    def timer(setup):
        return {
            "stages": {"proposals": seconds / 2, "backbone": seconds / 4, "roi_head": seconds / 8, "postprocess": None},
            "end_to_end": seconds,
            "flops": {stage: 2e9 for stage in STAGES},
            "end_to_end_flops": 8e9,
            "flops_method": "fake",
            "notes": [],
        }

    return timer


def broken_timer(setup):
    raise ImportError("detect.models.rcnn is missing")


def test_speedup_against_measured_rcnn_and_unavailable_timer(tmp_path, monkeypatch):
    monkeypatch.setattr(
        speed_table, "TIMERS", {"rcnn": fake_timer(10.0), "faster_rcnn": fake_timer(2.0), "fast_rcnn": broken_timer}
    )
    result = run_benchmark(
        ["rcnn", "faster_rcnn", "fast_rcnn"], backbone="tiny", runs=1, warmup=0, image_size=(64, 64),
        out_dir=str(tmp_path), num_images=1, dataset_config="unused.yaml",
        model_dirs={"rcnn": str(tmp_path / "no_model"), "faster_rcnn": str(tmp_path / "no_model")},
    )
    measured = {r["detector"]: r for r in result["rows"] if r["status"] == "ok"}
    # 10 s (R-CNN) / 2 s = 5x; R-CNN against itself 1x.
    assert measured["faster_rcnn"]["speedup_vs_rcnn"] == pytest.approx(5.0)
    assert measured["rcnn"]["speedup_vs_rcnn"] == pytest.approx(1.0)
    # Stage sum skips the missing postprocess: 1 + 0.5 + 0.25 = 1.75 s; 8 GFLOP / 2 s = 4 GFLOP/s.
    assert measured["faster_rcnn"]["stages_sum_s"] == pytest.approx(1.75)
    assert measured["faster_rcnn"]["detect_gflop_per_s"] == pytest.approx(4.0)
    broken = [r for r in result["rows"] if r["detector"] == "fast_rcnn" and r["status"] == "unavailable"]
    assert broken and broken[0]["note"] == "detect.models.rcnn is missing"
    assert "5.0x" in result["table"]
    # Without a trained model folder AP is skipped with a note, not an error.
    assert f"AP of faster_rcnn skipped: no trained model folder at {tmp_path / 'no_model'}" in result["table"]
    assert measured["faster_rcnn"]["ap"] is None
    # Paper ratios: 47 / 47 = 1x for R-CNN, 47 / 1.83 = 25.7x for Fast R-CNN is not shown
    # (Fast R-CNN unavailable), 47 / 0.198 = 237.4x for Faster R-CNN.
    paper = {r["detector"]: r for r in result["rows"] if r["status"] == "paper"}
    assert set(paper) == {"rcnn", "faster_rcnn"}
    assert paper["rcnn"]["speedup_vs_rcnn"] == pytest.approx(1.0)


def test_bad_arguments(tmp_path):
    with pytest.raises(DetectError, match="runs"):
        run_benchmark(["faster_rcnn"], runs=0, out_dir=str(tmp_path))
    with pytest.raises(DetectError, match="no detectors"):
        run_benchmark([], out_dir=str(tmp_path))
    with pytest.raises(DetectError, match="not a folder"):
        load_images(str(tmp_path / "missing"))
    with pytest.raises(DetectError, match="no image files"):
        load_images(str(tmp_path))


def test_canvas_rounds_resized_images_up_to_32():
    # 600x800: scale min(600/600, 1000/800) = 1 -> 600x800 -> canvas 608x800 (600 = 18.75 * 32).
    assert canvas_for_images([np.zeros((600, 800, 3), np.uint8)], 600, 1000) == (608, 800)
    # 375x500: scale min(600/375, 1000/500) = 1.6 -> 600x800; 1000x300: scale
    # min(600/300, 1000/1000) = 1 -> 1000x300. Largest of each side: 1000 -> 1024, 800 -> 800.
    images = [np.zeros((375, 500, 3), np.uint8), np.zeros((1000, 300, 3), np.uint8)]
    assert canvas_for_images(images, 600, 1000) == (1024, 800)


def test_median_seconds_calls_warmup_plus_runs_times_per_input():
    calls = []
    seconds = median_seconds(lambda x: calls.append(x), [(1,), (2,)], warmup=2, runs=3)
    # (2 warm-up + 3 timed) passes x 2 inputs = 10 calls.
    assert calls == [1, 2] * 5
    assert seconds >= 0


def test_flops_of_conv_and_matmul():
    kernel = tf.ones((3, 3, 2, 4))
    weights = tf.ones((3, 4))

    @tf.function(input_signature=[tf.TensorSpec((1, 5, 5, 2)), tf.TensorSpec((2, 3))])
    def fn(images, vectors):
        return tf.nn.conv2d(images, kernel, 1, "SAME"), tf.matmul(vectors, weights)

    # conv: 2 * (1*5*5*4 outputs) * (3*3*2 taps) = 3600; matmul: 2 * (2*4 outputs) * 3 = 48.
    flops, method = graph_flops(fn)
    assert flops == 3648
    assert method == "tf profiler float_ops"
    assert speed_table._shape_flops(fn.get_concrete_function().graph) == 3648


def test_random_images_are_smooth_uint8_and_seeded():
    first = random_images(2, (60, 80), seed=3)
    again = random_images(2, (60, 80), seed=3)
    assert [im.shape for im in first] == [(60, 80, 3)] * 2
    assert first[0].dtype == np.uint8
    assert np.array_equal(first[0], again[0]) and not np.array_equal(first[0], first[1])
    # Neighbouring pixels differ far less than independent uniform noise would (~85).
    assert np.abs(np.diff(first[0].astype(int), axis=1)).mean() < 30
