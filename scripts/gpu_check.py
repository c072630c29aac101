"""GPU check: Faster R-CNN with VGG16 and ResNet50 at the paper's scale on one GPU.

For each backbone: the config's Faster R-CNN (configs/faster_rcnn/base.yaml for VGG16,
resnet50_coco.yaml for ResNet50) at 600x1000 images on a 608x1024 canvas, RoIAlign,
mixed precision (mixed_float16), built through the public path
(detect.config.load_config -> detect.models.registry.build_model); then 50 training steps
(model.train_on_batch) and 50 inferences (model.predict_on_batch) on synthetic images
with a few boxes, after warm-up steps that trace the graphs. Reports ms per training
step and ms per image. Weights are random (`--weights none`, the default) unless
`--weights imagenet` is given: speed does not depend on them.

Usage: python scripts/gpu_check.py [--steps 50] [--batch-size 1] [--backbones vgg16,resnet50]
       [--out gpu_check.json]
Exits with status 2 and one line when TensorFlow sees no GPU.
"""

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {"vgg16": "configs/faster_rcnn/base.yaml", "resnet50": "configs/faster_rcnn/resnet50_coco.yaml"}
IMAGE = (600, 1000)  # content height, width
CANVAS = (608, 1024)  # rounded up to the stride-32 multiple


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", default="vgg16,resnet50")
    parser.add_argument("--steps", type=int, default=50, help="timed training steps and inference batches")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (graph tracing)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--weights", default="none", choices=("none", "imagenet"))
    parser.add_argument("--out", default=None, help="also write the figures as JSON here")
    parser.add_argument("--cpu", action="store_true", help="run without a GPU (to check the script; slow)")
    return parser.parse_args(argv)


def synthetic_batch(batch_size, training, seed=0):
    """Random images (N, 608, 1024, 3) with 600x1000 content and, for training, 3 boxes each."""
    import numpy as np

    rng = np.random.default_rng(seed)
    images = np.zeros((batch_size,) + CANVAS + (3,), np.float32)
    images[:, : IMAGE[0], : IMAGE[1]] = rng.uniform(0, 255, (batch_size,) + IMAGE + (3,))
    batch = {
        "images": images,
        "image_shape": np.tile(np.array([IMAGE], np.int32), (batch_size, 1)),
        "scale": np.ones((batch_size, 2), np.float32),
    }
    if training:
        boxes = np.array([[50, 60, 250, 300], [400, 100, 700, 500], [700, 300, 980, 590]], np.float32)
        batch["gt_boxes"] = np.tile(boxes[None], (batch_size, 1, 1))
        batch["gt_labels"] = np.tile(np.array([[1, 2, 3]], np.int32), (batch_size, 1))
    return batch


def build(backbone, args):
    from detect.config import load_config
    from detect.models.registry import build_model

    overrides = [
        f"backbone.name={backbone}",
        f"backbone.weights={args.weights}",
        "roi.pool=align",
        f"input.min_size={IMAGE[0]}",
        f"input.max_size={IMAGE[1]}",
        f"input.canvas=[{CANVAS[0]}, {CANVAS[1]}]",
        f"training.batch_size={args.batch_size}",
    ]
    config = load_config(os.path.join(ROOT, CONFIGS[backbone]), overrides)
    model = build_model(config, [f"class{i}" for i in range(1, args.classes + 1)])
    return model, config


def timed(function, steps, warmup):
    """Milliseconds per call of `function` (which returns host values, so the GPU is synced)."""
    for _ in range(warmup):
        function()
    start = time.perf_counter()
    for _ in range(steps):
        function()
    return 1000.0 * (time.perf_counter() - start) / steps


def measure(backbone, args):
    import keras

    from detect.training.optimizers import build_optimizer

    model, config = build(backbone, args)
    model.compile(optimizer=build_optimizer(config["training"]), jit_compile=False)
    train = synthetic_batch(args.batch_size, training=True)
    infer = synthetic_batch(args.batch_size, training=False)
    step_ms = timed(lambda: model.train_on_batch(train, return_dict=True), args.steps, args.warmup)
    batch_ms = timed(lambda: model.predict_on_batch(infer), args.steps, args.warmup)
    keras.backend.clear_session()
    return {
        "backbone": backbone,
        "image": f"{IMAGE[0]}x{IMAGE[1]} on a {CANVAS[0]}x{CANVAS[1]} canvas",
        "batch_size": args.batch_size,
        "precision": keras.mixed_precision.global_policy().name,
        "roi_pool": "align",
        "ms_per_training_step": round(step_ms, 1),
        "ms_per_image": round(batch_ms / args.batch_size, 1),
    }


def main(argv=None):
    args = parse_args(argv)
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus and not args.cpu:
        print("gpu_check: no GPU visible to TensorFlow (tf.config.list_physical_devices('GPU') is empty); "
              "install the gpu extra (tensorflow[and-cuda]) on a machine with an NVIDIA GPU", file=sys.stderr)
        return 2
    import keras

    if gpus:
        keras.mixed_precision.set_global_policy("mixed_float16")
        names = ", ".join(tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus)
        print(f"GPU: {names}")
    else:
        print("no GPU: running on the CPU in float32 (--cpu), figures are not GPU figures")
    rows = []
    for backbone in [b.strip() for b in args.backbones.split(",") if b.strip()]:
        if backbone not in CONFIGS:
            print(f"gpu_check: unknown backbone {backbone!r} ({', '.join(CONFIGS)})", file=sys.stderr)
            return 2
        rows.append(measure(backbone, args))
        row = rows[-1]
        print(f"{backbone:9s} train {row['ms_per_training_step']:8.1f} ms/step   "
              f"inference {row['ms_per_image']:8.1f} ms/image   (batch {args.batch_size}, {args.steps} steps)",
              flush=True)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)
        print(f"figures written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
