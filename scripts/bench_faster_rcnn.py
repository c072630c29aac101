#!/usr/bin/env python3
"""Time the project's Faster R-CNN in the configuration of the torchvision peer script.

The reference configuration (the same on both sides, for a fair ratio): VGG16
conv1_1..conv5_3 (stride 16), 9 anchors (128/256/512 x 0.5/1/2), RPN 6000 boxes before
NMS and 300 proposals at test (12000 / 2000 in training), NMS 0.7, 7x7 RoIAlign
(sampling ratio 2), fc6/fc7 of 4096, 21 classes, one 600x800 RGB image on a 608x800
canvas (torchvision pads to a multiple of 32), float32, random weights.

  infer: one image through `prepare_image` (resize + pad) and `model.predict_step` in one
         tf.function, as the peer's `model(image)` includes its transform.
  train: one SGD step (lr 1e-4, momentum 0.9) at batch 1 with the peer's three boxes,
         through `model.train_on_batch` (Keras' compiled train function) with the
         trainers' optimizer (detect.training.optimizers, no weight decay).

Usage:
  .venv/bin/python scripts/bench_faster_rcnn.py [--mode infer|train] [--runs 5]
      [--svd 1024,256] [--trainable-all]

Prints one JSON line: {"ours": "detect", "mode": ..., "median_s": ..., "runs": [...]}.
Run it in the same shell session as the peer script and report the ratio ours/peer.
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import detect  # noqa: E402,F401  (CPU settings made before TensorFlow starts: detect/runtime.py)
import tensorflow as tf  # noqa: E402

from detect.data.pipeline import prepare_image  # noqa: E402
from detect.config import from_dict  # noqa: E402
from detect.models.registry import build_model  # noqa: E402
from detect.runtime import describe  # noqa: E402

CLASS_NAMES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]
# The peer's ground truth: boxes xyxy in pixels of the 600x800 image, labels 1..3.
GT_BOXES = [[50.0, 60.0, 300.0, 400.0], [400.0, 100.0, 700.0, 500.0], [100.0, 300.0, 250.0, 580.0]]
GT_LABELS = [1, 2, 3]
MIN_SIZE, MAX_SIZE = 600, 1000


def build(canvas, trainable_all=False):
    """The paper-configuration VGG16 Faster R-CNN with random weights."""
    config = from_dict({
        "backbone": {"name": "vgg16", "weights": "none"},
        "input": {"min_size": MIN_SIZE, "max_size": MAX_SIZE, "canvas": list(canvas)},
        "rpn": {"anchor_sizes": [128, 256, 512], "anchor_ratios": [0.5, 1.0, 2.0], "channels": 512,
                "pre_nms_top_n_train": 12000, "post_nms_top_n_train": 2000, "pre_nms_top_n_test": 6000,
                "post_nms_top_n_test": 300, "nms_iou": 0.7},
        "roi": {"pool": "align", "size": 7, "sampling_ratio": 2, "batch_size": 128, "head_dim": 4096},
    })
    model = build_model(config, CLASS_NAMES)
    if trainable_all:
        # torchvision trains every VGG16 layer; the paper (and our default) freezes conv1-conv2.
        for layer in model.backbone.layers:
            for sub in getattr(layer, "layers", [layer]):
                sub.trainable = True
    return model


def apply_svd(model, text):
    """Model with truncated-SVD fc6/fc7, or exit with a clear line when unavailable."""
    try:
        from detect.models.svd import parse_ranks, truncate_head
    except ImportError:
        sys.exit("--svd skipped: detect.models.svd is not available in this version")
    try:
        return truncate_head(model, parse_ranks(text))
    except TypeError as e:
        sys.exit(f"--svd skipped: the model does not support a factorized head yet ({e})")


def timed(step, warmup, runs):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def infer_step(model, image, canvas):
    """A no-argument callable running preprocessing + detection on the image."""
    spec = {
        "images": tf.TensorSpec((1, *canvas, 3), tf.float32),
        "image_shape": tf.TensorSpec((1, 2), tf.int32),
        "scale": tf.TensorSpec((1, 2), tf.float32),
    }
    detect = tf.function(model.predict_step, input_signature=[spec])

    def step():
        inputs = prepare_image(image, min_size=MIN_SIZE, max_size=MAX_SIZE, canvas_size=canvas)
        outputs = detect({key: tf.constant(value) for key, value in inputs.items()})
        return {key: value.numpy() for key, value in outputs.items()}

    return step


def train_step(model, image, canvas):
    inputs = prepare_image(image, min_size=MIN_SIZE, max_size=MAX_SIZE, canvas_size=canvas)
    sy, sx = inputs["scale"][0]
    boxes = np.array(GT_BOXES, np.float32) * np.array([sx, sy, sx, sy], np.float32)
    batch = {
        "images": inputs["images"],
        "image_shape": inputs["image_shape"],
        "gt_boxes": boxes[None],
        "gt_labels": np.array([GT_LABELS], np.int32),
    }
    from detect.training.optimizers import build_optimizer

    # The trainers' optimizer (Caffe SGD; no weight decay here, as the peer's step has none).
    optimizer = build_optimizer({"optimizer": "sgd", "learning_rate": 1e-4, "momentum": 0.9, "weight_decay": 0.0})
    model.compile(optimizer=optimizer, jit_compile=False)
    return lambda: model.train_on_batch(batch)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["infer", "train"], default="infer")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls first (the first one traces)")
    parser.add_argument("--height", type=int, default=600)
    parser.add_argument("--width", type=int, default=800)
    parser.add_argument("--svd", default=None, help="truncated SVD ranks of fc6,fc7, e.g. 1024,256 (infer)")
    parser.add_argument("--trainable-all", action="store_true", help="train conv1-conv2 too, as torchvision does")
    args = parser.parse_args()

    tf.random.set_seed(0)
    scale = min(MIN_SIZE / min(args.height, args.width), MAX_SIZE / max(args.height, args.width))
    canvas = tuple(-(-round(side * scale) // 32) * 32 for side in (args.height, args.width))
    # Like the peer's torch.rand image, scaled to the [0, 255] pixels the model expects.
    image = np.random.default_rng(0).uniform(0, 255, (args.height, args.width, 3)).astype(np.float32)
    model = build(canvas, args.trainable_all)
    if args.svd:
        model = apply_svd(model, args.svd)
    if args.mode == "infer":
        step = infer_step(model, image, canvas)
    else:
        step = train_step(model, image, canvas)
    times = timed(step, args.warmup, args.runs)
    print(json.dumps({
        "ours": "detect", "tensorflow": tf.__version__, "mode": args.mode, "threads": os.cpu_count(),
        "cpu": describe(),
        "image": [args.height, args.width], "canvas": list(canvas), "svd": args.svd,
        "trainable_all": args.trainable_all,
        "median_s": round(statistics.median(times), 4), "runs": [round(t, 4) for t in times],
    }))


if __name__ == "__main__":
    main()
