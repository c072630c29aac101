"""Mask R-CNN end to end through the CLI on a small shapes-with-masks set: data shapes
--masks, train, evaluate (segm AP in metrics.json beside the box AP), predict (masks drawn,
RLE in detections.json)."""

import json
import os

import numpy as np
import yaml
from click.testing import CliRunner
from PIL import Image

from detect.cli import main
from detect.data.masks import decode

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_shapes_masks_train_evaluate_predict(tmp_path):
    data = tmp_path / "shapes"
    assert "with instance masks" in run("data", "shapes", "--masks", "--out", data, "--num-images", 24,
                                        "--image-size", 64, "--seed", 2)
    config = {
        "_base_": os.path.join(ROOT, "configs/mask_rcnn/tiny_shapes.yaml"),
        "backbone": {"width": 8},
        "dataset": {
            "train": {"annotations": str(data / "annotations/train.json"), "images": str(data / "images")},
            "val": {"annotations": str(data / "annotations/val.json"), "images": str(data / "images")},
        },
        "input": {"min_size": 64, "max_size": 64, "cache": False},
        "rpn": {"channels": 16, "pre_nms_top_n_train": 200, "post_nms_top_n_train": 64, "post_nms_top_n_test": 32},
        "roi": {"batch_size": 16, "head_dim": 32},
        "mask": {"channels": 8, "num_convs": 1, "pool_size": 7, "num_rois": 4},
        "training": {"epochs": 2, "batch_size": 4, "warmup_steps": 2, "time_budget_minutes": None, "val_every": 1},
        "callbacks": {"tensorboard": {"enabled": False}},
    }
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    model = tmp_path / "model"
    run("train", config_path, "--out", model)
    with open(model / "history.csv") as f:
        header = f.readline()
    assert "mask_loss" in header and "val_mask_loss" in header

    output = run("evaluate", model, "--split", "val")
    metrics = json.loads((model / "eval_val" / "metrics.json").read_text())
    assert list(metrics["segm"]) == list(metrics["coco"])  # the same 12 keys
    assert all(-1.0 <= v <= 1.0 for v in metrics["segm"].values())
    assert set(metrics["per_class_segm"]) == {"circle", "rectangle", "triangle"}
    assert "mask AP" in output
    detections = json.loads((model / "eval_val" / "detections.json").read_text())
    assert detections and all(d["segmentation"]["size"] == [64, 64] for d in detections)

    out = tmp_path / "predictions"
    output = run("predict", model, data / "images" / "val", "--out", out, "--score-threshold", 0.0)
    assert str(out) in output.strip().splitlines()[-1]
    entries = json.loads((out / "detections.json").read_text())
    first = next(e for e in entries if e["detections"])
    mask = decode(first["detections"][0]["segmentation"], 64, 64)
    assert mask.shape == (64, 64)
    x1, y1, x2, y2 = first["detections"][0]["box"]
    ys, xs = np.nonzero(mask)
    if len(xs):  # a mask lies inside its box
        assert xs.min() >= np.floor(x1) and xs.max() < np.ceil(x2) and ys.min() >= np.floor(y1)
    assert Image.open(first["annotated"]).size == (64, 64)
    coco = json.loads((out / "detections_coco.json").read_text())
    assert all("segmentation" in c for c in coco)
