"""End-to-end training on a small shapes dataset: the loss drops, mAP callbacks act, and a
SIGKILLed run resumes from its last finished epoch with its optimizer state."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from detect.config import load_config
from detect.data.shapes import generate_shapes
from detect.training.train import train

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    generate_shapes(str(out), num_images=60, image_size=64, seed=3, progress=False)
    return out


def write_config(tmp_path, shapes, **training):
    config = {
        "_base_": os.path.join(ROOT, "configs/faster_rcnn/tiny_shapes.yaml"),
        "backbone": {"width": 8},
        "dataset": {
            "train": {"annotations": str(shapes / "annotations/train.json"), "images": str(shapes / "images")},
            "val": {"annotations": str(shapes / "annotations/val.json"), "images": str(shapes / "images")},
        },
        "input": {"min_size": 64, "max_size": 64},
        "rpn": {"channels": 16, "pre_nms_top_n_train": 200, "post_nms_top_n_train": 64, "post_nms_top_n_test": 32},
        "roi": {"batch_size": 16, "head_dim": 32},
        "training": {"epochs": 3, "batch_size": 4, "warmup_steps": 2, "time_budget_minutes": None, "val_every": 1, **training},
        "callbacks": {"tensorboard": {"enabled": False}},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def history(out):
    with open(os.path.join(out, "history.csv"), newline="") as f:
        return list(csv.DictReader(f))


def test_training_loss_drops_and_writes_model_folder(tmp_path, shapes):
    config = load_config(write_config(tmp_path, shapes, epochs=4, learning_rate=0.003, lr_schedule="constant"))
    out = str(tmp_path / "model")
    result = train(config, out)
    rows = history(out)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    for name in ("model.keras", "last.keras", "config.yaml", "history.csv", "loss_curve.png"):
        assert os.path.isfile(os.path.join(out, name)), name
    assert not os.path.exists(os.path.join(out, "backup"))  # removed once training finished
    assert result["model"] == os.path.join(out, "model.keras")
    # Throughput over the 4 training epochs (validation time excluded).
    summary = json.load(open(os.path.join(out, "train_summary.json")))
    assert summary["epochs"] == result["epochs"] == 4
    assert summary["images_per_second"] > 0
    from detect.runtime import cpu_model

    assert summary["machine"].startswith(cpu_model()) and "oneDNN" in summary["machine"]


def test_map_callback_drives_early_stopping_and_lr(tmp_path, shapes):
    path = write_config(tmp_path, shapes, epochs=8, learning_rate=1e-7, lr_schedule="constant", optimizer="sgd")
    config = load_config(
        path,
        [
            "callbacks.coco_map={every: 1, max_images: 8}",
            "callbacks.early_stopping={monitor: val_AP, mode: max, patience: 2, min_delta: 0.01}",
            "callbacks.reduce_lr_on_plateau={monitor: val_AP, mode: max, patience: 1, factor: 0.5, min_delta: 0.01}",
            "callbacks.model_checkpoint={monitor: val_AP, mode: max}",
        ],
    )
    out = str(tmp_path / "model")
    train(config, out)
    rows = history(out)
    # A learning rate of 1e-7 cannot move AP by 0.01 (only BatchNorm's moving statistics
    # drift, by ~0.001 AP an epoch): it plateaus at once, so EarlyStopping (patience 2)
    # ends the run after epoch 3 and ReduceLROnPlateau halves the rate.
    assert "val_AP" in rows[0] and "val_AP50" in rows[0]
    assert len(rows) < 8
    rates = [float(r["learning_rate"]) for r in rows]
    assert min(rates) < max(rates)


def test_sigkill_then_rerun_resumes(tmp_path, shapes):
    path = write_config(tmp_path, shapes, epochs=4, batch_size=2)
    out = str(tmp_path / "model")
    cmd = [sys.executable, "-m", "detect.cli", "train", path, "--out", out]
    env = {**os.environ, "DETECT_QUIET": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            if os.path.exists(os.path.join(out, "history.csv")) and len(history(out)) >= 1:
                break
            if proc.poll() is not None:
                pytest.fail("training ended before it could be killed")
            time.sleep(0.05)
        time.sleep(0.3)  # into the next epoch
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finished = len(history(out))
    assert 1 <= finished < 4
    assert os.path.isdir(os.path.join(out, "backup"))

    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resuming" in result.stdout
    rows = history(out)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]  # none lost, none repeated

    import keras

    import detect.models.detector  # noqa: F401

    last = keras.saving.load_model(os.path.join(out, "last.keras"))
    # steps per epoch = train images // batch size (2); 4 epochs in all:
    # the optimizer's step counter only matches if its state survived the kill.
    train_images = len(yaml.safe_load(open(shapes / "annotations/train.json"))["images"])
    assert int(last.optimizer.iterations.numpy()) == 4 * (train_images // 2)


def test_alternating_schedule_four_steps_share_a_frozen_backbone(tmp_path, shapes):
    import keras
    import numpy as np

    from detect.models.registry import build_model

    path = write_config(tmp_path, shapes, schedule="alternating", alternating_epochs=[1, 1, 1, 1], steps_per_epoch=3)
    config = load_config(path)
    out = str(tmp_path / "model")
    train(config, out)
    state = yaml.safe_load(open(os.path.join(out, "alternating.json")))
    assert state["done"] == ["1_rpn", "2_detector", "3_rpn_finetune", "4_detector_finetune"]
    step2 = build_model(config, ["circle", "rectangle", "triangle"])
    step2.load_weights(os.path.join(out, "step2_detector.weights.h5"))
    final = keras.saving.load_model(os.path.join(out, "model.keras"))
    # Steps 3 and 4 fix the backbone trained in step 2: it reaches the final model unchanged.
    for a, b in zip(step2.backbone.get_weights(), final.backbone.get_weights()):
        np.testing.assert_array_equal(a, b)
    # Step 3 starts the RPN from step 1's and fine-tunes it: it is not step 2's untrained one.
    assert any(not np.array_equal(a, b) for a, b in zip(step2.rpn.get_weights(), final.rpn.get_weights()))
    # A rerun finds all four steps done: it loads their weights instead of training again.
    weights = [os.path.join(out, f"step{name}.weights.h5") for name in state["done"]]
    before = [os.stat(w).st_mtime_ns for w in weights]
    train(config, out)
    assert [os.stat(w).st_mtime_ns for w in weights] == before



def test_per_image_canvases_train_evaluate_and_predict(tmp_path, shapes):
    """`input.canvas: per_image` (the torchvision detectors' batching): batches of varying canvas
    sizes train through one traced step, and the model evaluates and predicts on them."""
    from detect.evaluation.evaluate_model import evaluate_model
    from detect.inference.predictor import Predictor

    config = load_config(write_config(tmp_path, shapes, epochs=1, steps_per_epoch=3), [
        "input.canvas=per_image", "input.resize=torchvision", "input.min_size=56", "input.max_size=100",
        "rpn.anchor_rule=torchvision", "roi.aligned=false"])
    out = str(tmp_path / "model")
    train(config, out)
    metrics = evaluate_model(out, split="val", progress=False)
    assert 0.0 <= metrics["coco"]["AP"] <= 1.0
    import numpy as np

    predictor = Predictor.from_dir(out, min_score=0.0)
    # 64 x 64 -> 56 x 56 content on a 64 x 64 canvas; 30 x 90 -> 56 x 168 -> max 100: 33 x 100 on 64 x 128.
    for shape, canvas in (((64, 64, 3), (64, 64)), ((30, 90, 3), (64, 128))):
        prepared = predictor.prepare(np.zeros(shape, np.uint8))
        assert prepared["images"].shape[1:3] == canvas
        predictor.predict(np.zeros(shape, np.uint8), 0.0)
