"""Speed table: real tiny runs write the table / CSV / chart for all three detectors; the
helpers are checked on hand-computed cases (canvas rounding, FLOP counts, medians,
speed-ups, chunk choice, proposal scaling, extrapolation). No timing asserts."""

import csv
import os
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

from detect.benchmark import speed_table, timers
from detect.benchmark.speed_table import STAGES, canvas_for_images, load_images, random_images, run_benchmark
from detect.benchmark.rcnn_timers import best_chunk_size, interleaved_ratio
from detect.benchmark.timers import canvas_proposals, graph_flops, median_seconds, selective_search_proposals
from detect.errors import DetectError


def test_tiny_faster_rcnn_and_unknown_detector(tmp_path):
    result = run_benchmark(
        ["faster_rcnn", "no_such_detector"], backbone="tiny", runs=1, warmup=1, image_size=(128, 128),
        out_dir=str(tmp_path), num_images=1,
    )
    for key, name in (("markdown", "speed.md"), ("csv", "speed.csv"), ("chart", "speed.png")):
        assert result["paths"][key] == os.path.join(str(tmp_path), name)
        assert os.path.getsize(result["paths"][key]) > 0
    for column in ("proposals (ms)", "backbone (ms)", "RoI head (ms)", "postprocess (ms)", "predict_step() (ms)"):
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


def fake_timer(seconds, with_proposals=None):
    def timer(setup):
        result = {
            "stages": {"proposals": seconds / 2, "backbone": seconds / 4, "roi_head": seconds / 8, "postprocess": None},
            "end_to_end": seconds,
            "flops": {stage: 2e9 for stage in STAGES},
            "end_to_end_flops": 8e9,
            "flops_method": "fake",
            "notes": [],
        }
        if with_proposals is not None:
            result["end_to_end_with_proposals"] = with_proposals
        return result

    return timer


def broken_timer(setup):
    raise ImportError("detect.models.rcnn is missing")


def test_speedup_against_measured_rcnn_and_unavailable_timer(tmp_path, monkeypatch):
    monkeypatch.setattr(
        speed_table, "TIMERS", {"rcnn": fake_timer(10.0, with_proposals=12.0), "faster_rcnn": fake_timer(2.0), "fast_rcnn": broken_timer}
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
    # With proposal time: R-CNN 12 s (predict_step() + selective search), Faster R-CNN 2 s (its RPN
    # is inside predict_step()): 12 / 2 = 6x.
    assert "speed-up vs R-CNN with proposal time included: rcnn 12 s (1.0x), faster_rcnn 2 s (6.0x)" in result["table"]
    assert measured["rcnn"]["note"] == "predict_step() with selective search 12 s"
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
    with pytest.raises(DetectError, match="max_rcnn_proposals"):
        run_benchmark(["rcnn"], max_rcnn_proposals=0, out_dir=str(tmp_path))
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
    assert timers._shape_flops(fn.get_concrete_function().graph) == 3648


def test_random_images_are_smooth_uint8_and_seeded():
    first = random_images(2, (60, 80), seed=3)
    again = random_images(2, (60, 80), seed=3)
    assert [im.shape for im in first] == [(60, 80, 3)] * 2
    assert first[0].dtype == np.uint8
    assert np.array_equal(first[0], again[0]) and not np.array_equal(first[0], first[1])
    # Neighbouring pixels differ far less than independent uniform noise would (~85).
    assert np.abs(np.diff(first[0].astype(int), axis=1)).mean() < 30


def _measured(result):
    return {r["detector"]: r for r in result["rows"] if r["status"] == "ok"}


def _table_line(table, name):
    return next(line for line in table.splitlines() if line.startswith(f"| {name} | measured"))


def selective_search_proposals_of(image):
    from detect.proposals.selective_search import selective_search

    return selective_search(image, mode="fast", max_side=500, max_proposals=2000)


def test_tiny_rcnn_fast_rcnn_faster_rcnn_on_the_same_images(tmp_path):
    result = run_benchmark(
        ["rcnn", "fast_rcnn", "faster_rcnn"], backbone="tiny", runs=1, warmup=1, image_size=(128, 128),
        out_dir=str(tmp_path), num_images=1,
    )
    measured = _measured(result)
    assert list(measured) == ["rcnn", "fast_rcnn", "faster_rcnn"]
    for name, row in measured.items():
        for stage in STAGES:
            assert row[f"{stage}_s"] > 0, (name, stage)
        assert row["detect_s"] > 0
        speedup = measured["rcnn"]["detect_s"] / row["detect_s"]
        assert row["speedup_vs_rcnn"] == pytest.approx(speedup)
        assert _table_line(result["table"], name).endswith(f"| {speedup:,.1f}x |")
    # Both selective-search detectors read the same proposals, timed once.
    proposals = len(selective_search_proposals_of(random_images(1, (128, 128))[0]))
    assert measured["rcnn"]["proposals_s"] == measured["fast_rcnn"]["proposals_s"]
    for name in ("rcnn", "fast_rcnn"):
        row = measured[name]
        assert row["detect_with_proposals_s"] == pytest.approx(row["detect_s"] + row["proposals_s"])
    # R-CNN runs the CNN over every crop: 48x48 px per proposal against one 128x128 pass.
    assert measured["rcnn"]["backbone_gflop"] > 10 * measured["fast_rcnn"]["backbone_gflop"]
    batching = measured["rcnn"]["crop_batching"]
    # The measured batch sizes and the tiny setting's configured chunk of 256.
    assert set(batching["seconds_per_crop"]) == {1, 8, 32, 128, 256}
    assert batching["chunk_size"] in batching["seconds_per_crop"]
    assert batching["crops_per_image"] == proposals
    sweep = batching["seconds_per_crop"]
    assert batching["best_batch_size"] == min(sweep, key=sweep.get)
    # Ratio = predict_step() per image / (crops per image x seconds per crop), both re-measured alternately.
    assert batching["rounds"] == 2
    assert batching["ratio"] == pytest.approx(
        batching["detect_seconds"] / (proposals * batching["best_seconds_per_crop"]))
    assert f"rcnn: crop batching ratio {batching['ratio']:.2f} = predict_step()" in result["table"]
    assert "extrapolation" not in measured["rcnn"]
    with open(result["paths"]["csv"], newline="") as f:
        notes = {line["detector"]: line["note"] for line in csv.DictReader(f) if line["status"] == "ok"}
    assert f"crop batching ratio {batching['ratio']:.2f}" in notes["rcnn"]


def test_rcnn_proposal_cap_extrapolates_linearly(tmp_path):
    result = run_benchmark(
        ["rcnn"], backbone="tiny", runs=1, warmup=0, image_size=(128, 128), out_dir=str(tmp_path), num_images=1,
        max_rcnn_proposals=40,
    )
    row = _measured(result)["rcnn"]
    proposals = len(selective_search_proposals_of(random_images(1, (128, 128))[0]))
    assert proposals > 40
    # 40 of P proposals cropped: every network time is the measured one x P / 40.
    extrapolation = row["extrapolation"]
    assert (extrapolation["cap"], extrapolation["crops_per_image"]) == (40, 40)
    assert extrapolation["proposals_per_image"] == proposals
    assert extrapolation["factor"] == pytest.approx(proposals / 40)
    assert row["detect_s"] == pytest.approx(extrapolation["measured_detect_seconds"] * proposals / 40)
    assert row["crop_batching"]["crops_per_image"] == 40
    assert f"network times from 40 of {proposals} proposals, extrapolated x" in _table_line(result["table"], "rcnn")
    assert "rcnn: proposals capped at 40 per image: predict_step() measured" in result["table"]


def test_best_chunk_size_counts_the_padded_last_chunk():
    per_crop = {8: 1.0, 32: 0.5, 128: 0.45}
    # 40 crops: 8 -> 5 chunks, 40 crops x 1.0 = 40; 32 -> 2 chunks, 64 x 0.5 = 32;
    # 128 -> 1 chunk, 128 x 0.45 = 57.6. Best: 32.
    assert best_chunk_size(per_crop, [40]) == 32
    # 128 + 100 crops: 8 -> (16 + 13) x 8 = 232 x 1.0 = 232; 32 -> (4 + 4) x 32 = 256 x 0.5 = 128;
    # 128 -> 2 x 128 = 256 x 0.45 = 115.2. Best: 128.
    assert best_chunk_size(per_crop, [128, 100]) == 128


def test_interleaved_ratio_alternates_detect_and_crop_passes():
    calls = []
    crops = tf.zeros((4, 2, 2, 3))
    ratio, detect_seconds, per_crop = interleaved_ratio(
        lambda x: calls.append(f"detect {x}"), [(1,), (2,)], lambda c: calls.append(f"crops {c.shape[0]}"),
        crops, crops_per_image=10, rounds=2,
    )
    # Each round: predict_step() on every image, then one batch of 4 crops; no warm-up.
    assert calls == ["detect 1", "detect 2", "crops 4"] * 2
    assert ratio == pytest.approx(detect_seconds / (10 * per_crop))


def test_canvas_proposals_scale_and_pad():
    boxes = np.array([[10, 20, 30, 40], [0, 0, 5, 5], [1, 1, 2, 2]], np.float32)
    scale = np.array([[2.0, 0.5]], np.float32)  # sy = 2, sx = 0.5
    # x * 0.5, y * 2: [10, 20, 30, 40] -> [5, 40, 15, 80]; [0, 0, 5, 5] -> [0, 0, 2.5, 10].
    out = canvas_proposals(boxes, scale, 2).numpy()
    np.testing.assert_allclose(out, [[[5, 40, 15, 80], [0, 0, 2.5, 10]]])
    padded = canvas_proposals(boxes, scale, 4).numpy()
    assert padded.shape == (1, 4, 4)
    np.testing.assert_allclose(padded[0, 2:], [[0.5, 2, 1, 4], [0, 0, 0, 0]])
    assert canvas_proposals(np.zeros((0, 4), np.float32), scale, 3).numpy().sum() == 0


def test_selective_search_runs_once_per_setup():
    image = random_images(1, (64, 96), seed=1)[0]
    setup = SimpleNamespace(images=[image], proposal_kwargs={"mode": "fast", "max_side": 500, "max_proposals": 50},
                            warmup=0, runs=1, cache={})
    boxes, seconds = selective_search_proposals(setup)
    assert selective_search_proposals(setup)[0] is boxes
    assert 0 < len(boxes[0]) <= 50 and seconds > 0
    # Original-image pixels: inside the 96 x 64 image.
    assert boxes[0][:, [0, 2]].max() <= 96 and boxes[0][:, [1, 3]].max() <= 64


def test_bf16_benchmark_times_every_stage_and_says_so(tmp_path):
    result = run_benchmark(["faster_rcnn", "faster_rcnn_fpn"], backbone="tiny", runs=1, warmup=1,
                           image_size=(128, 128), out_dir=str(tmp_path), num_images=1, precision="bf16")
    measured = [r for r in result["rows"] if r["status"] == "ok"]
    assert [r["detector"] for r in measured] == ["faster_rcnn", "faster_rcnn_fpn"]
    assert all(r["source"].endswith(", bf16)") and r["detect_s"] > 0 for r in measured)
    assert "bf16: Keras mixed_bfloat16" in result["table"]
    with pytest.raises(DetectError, match="precision 'fp16'"):
        run_benchmark(["faster_rcnn"], backbone="tiny", precision="fp16", out_dir=str(tmp_path))
