"""GPU check: Faster R-CNN with VGG16 and ResNet50-FPN at COCO scale on one GPU, on any
Keras backend.

For each backbone and batch size: the config's Faster R-CNN (configs/faster_rcnn/base.yaml
for VGG16, resnet50_fpn_coco.yaml for ResNet50-FPN, resnet50_coco.yaml for ResNet50 C4)
at 800x1333 images on an 800x1344 canvas, RoIAlign, mixed precision (mixed_float16) on a
GPU, built through the public path (detect.config.load_config ->
detect.models.registry.build_model) and compiled as `detect train` compiles it (jax.jit on
JAX); then timed training steps (model.train_on_batch) and inferences
(detect.inference.predict_function, the path of detect evaluate and predict) on synthetic images with a few boxes, after warm-up steps that
compile. Reports ms per training step and ms per image. Weights are random (`--weights
none`, the default): speed does not depend on them.

Needs Keras 3, NumPy, PyYAML and the backend: TensorFlow, or JAX (`pip install keras
jax[cuda12] pyyaml`), or PyTorch (`pip install keras torch pyyaml`); no dataset files, and
no TensorFlow on JAX or PyTorch. Run from the repository root (or with it on PYTHONPATH).

Usage: python scripts/gpu_check.py [--backend tensorflow|jax|torch] [--steps 20]
       [--batch-sizes 2,8] [--backbones vgg16,resnet50_fpn] [--image 800x1333] [--out gpu_check.json]
Exits with status 2 and one line when the backend sees no GPU (--cpu runs anyway).
"""

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {"vgg16": "configs/faster_rcnn/base.yaml", "resnet50": "configs/faster_rcnn/resnet50_coco.yaml",
           "resnet50_fpn": "configs/faster_rcnn/resnet50_fpn_coco.yaml"}
BACKENDS = ("tensorflow", "jax", "torch")
IMAGE = (800, 1333)  # content height, width (COCO's test scale)
CANVAS = (800, 1344)  # rounded up to the stride-32 multiple


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "tensorflow"), choices=BACKENDS)
    parser.add_argument("--backbones", default="vgg16,resnet50_fpn")
    parser.add_argument("--batch-sizes", default="2,8")
    parser.add_argument("--image", default=f"{IMAGE[0]}x{IMAGE[1]}", help="content HEIGHTxWIDTH")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps and inference batches")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation)")
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--weights", default="none", choices=("none", "imagenet"))
    parser.add_argument("--out", default=None, help="also write the figures as JSON here")
    parser.add_argument("--cpu", action="store_true", help="run without a GPU (to check the script; slow)")
    args = parser.parse_args(argv)
    height, width = (int(v) for v in args.image.lower().split("x"))
    args.image_size = (height, width)
    args.canvas = (-(-height // 32) * 32, -(-width // 32) * 32)
    return args


def gpu_names(backend):
    """Names of the GPUs the backend sees (imports only that backend)."""
    if backend == "tensorflow":
        import tensorflow as tf

        return [tf.config.experimental.get_device_details(g).get("device_name", g.name)
                for g in tf.config.list_physical_devices("GPU")]
    if backend == "jax":
        import jax

        return [str(d.device_kind) for d in jax.devices() if d.platform == "gpu"]
    import torch

    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def synthetic_batch(batch_size, training, seed=0, image=IMAGE, canvas=CANVAS):
    """Random images (N, canvas, 3) with `image`-sized content and, for training, 3 boxes each."""
    import numpy as np

    rng = np.random.default_rng(seed)
    images = np.zeros((batch_size,) + tuple(canvas) + (3,), np.float32)
    images[:, : image[0], : image[1]] = rng.uniform(0, 255, (batch_size,) + tuple(image) + (3,))
    batch = {
        "images": images,
        "image_shape": np.tile(np.array([image], np.int32), (batch_size, 1)),
        "scale": np.ones((batch_size, 2), np.float32),
    }
    if training:
        boxes = np.array([[50, 60, 250, 300], [400, 100, 700, 500], [700, 300, 980, 590]], np.float32)
        batch["gt_boxes"] = np.tile(boxes[None], (batch_size, 1, 1))
        batch["gt_labels"] = np.tile(np.array([[1, 2, 3]], np.int32), (batch_size, 1))
    return batch


def build(backbone, args, batch_size):
    from detect.config import load_config
    from detect.models.registry import build_model

    overrides = [
        f"backbone.weights={args.weights}",
        "roi.pool=align",
        f"input.min_size={min(args.image_size)}",
        f"input.max_size={max(args.image_size)}",
        f"input.canvas=[{args.canvas[0]}, {args.canvas[1]}]",
        f"training.batch_size={batch_size}",
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


def measure(backbone, args, batch_size):
    import keras

    from detect.inference.predict_function import predict_function
    from detect.runtime import jit_compile
    from detect.training.optimizers import build_optimizer

    model, config = build(backbone, args, batch_size)
    model.compile(optimizer=build_optimizer(config["training"]), jit_compile=jit_compile())
    image, canvas = args.image_size, args.canvas
    train = synthetic_batch(batch_size, training=True, image=image, canvas=canvas)
    infer = synthetic_batch(batch_size, training=False, image=image, canvas=canvas)
    step_ms = timed(lambda: model.train_on_batch(train, return_dict=True), args.steps, args.warmup)
    predict = predict_function(model)  # the path detect evaluate / predict take
    batch_ms = timed(lambda: predict(infer), args.steps, args.warmup)
    keras.backend.clear_session()
    return {
        "backend": keras.backend.backend(),
        "backbone": backbone,
        "image": f"{image[0]}x{image[1]} on a {canvas[0]}x{canvas[1]} canvas",
        "batch_size": batch_size,
        "precision": keras.mixed_precision.global_policy().name,
        "roi_pool": "align",
        "ms_per_training_step": round(step_ms, 1),
        "ms_per_image": round(batch_ms / batch_size, 1),
    }


def main(argv=None):
    args = parse_args(argv)
    os.environ["KERAS_BACKEND"] = args.backend  # before Keras is imported
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    gpus = gpu_names(args.backend)
    if not gpus and not args.cpu:
        print(f"gpu_check: no GPU visible to {args.backend} (install its CUDA build, e.g. the gpu extra for "
              "TensorFlow, jax[cuda12] or a CUDA torch, on a machine with an NVIDIA GPU)", file=sys.stderr)
        return 2
    import keras

    if gpus:
        keras.mixed_precision.set_global_policy("mixed_float16")
        print(f"GPU ({args.backend}): {', '.join(gpus)}")
    else:
        print(f"no GPU: running on the CPU in float32 with {args.backend} (--cpu), figures are not GPU figures")
    backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
    unknown = [b for b in backbones if b not in CONFIGS]
    if unknown:
        print(f"gpu_check: unknown backbone {unknown[0]!r} ({', '.join(CONFIGS)})", file=sys.stderr)
        return 2
    rows = []
    for backbone in backbones:
        for batch_size in [int(b) for b in args.batch_sizes.split(",") if b.strip()]:
            row = measure(backbone, args, batch_size)
            rows.append(row)
            print(f"{backbone:13s} batch {batch_size:2d}  train {row['ms_per_training_step']:8.1f} ms/step   "
                  f"inference {row['ms_per_image']:8.1f} ms/image   ({args.steps} steps)", flush=True)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)
        print(f"figures written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
