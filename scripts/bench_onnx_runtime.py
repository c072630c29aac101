#!/usr/bin/env python3
"""ms per image of the TensorFlow (Keras) path against the ONNX Runtime path, same images.

Both go through the Predictor (detect.load): the same resize and padding, one image per
call (batch 1), end to end (resize + model + postprocess). Pairs are taken in turn (TF,
then ONNX, `--rounds` times) so a shared machine's drift hits both alike; each side's
figure is the median over its rounds of the median ms per image over `--runs` passes.

  --model-dir DIR: a trained model folder (e.g. models/faster_rcnn_tiny_shapes), exported
      to ONNX into a temporary folder; --images: a folder of its images (the first --count).
  without --model-dir: the VGG16 paper configuration of scripts/bench_faster_rcnn.py
      (random weights, 21 classes, canvas 608x800) on --count random 600x800 images, with
      fc6/fc7 --head-dim wide (default 1024: tf2onnx held > 19 GB converting the paper's
      4096-wide head, 138M weights, and was killed on a 23 GB machine).

Usage:
  .venv/bin/python scripts/bench_onnx_runtime.py [--model-dir DIR --images FOLDER] [--count 2]
      [--rounds 3] [--runs 3]
Prints one line per round and a JSON line.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import detect  # noqa: E402  (CPU settings before TensorFlow starts)


def vgg16_folder(folder, head_dim):
    """A model folder of the paper-configuration VGG16 Faster R-CNN (random weights), with
    fc6/fc7 `head_dim` wide (4096 in the paper)."""
    import bench_faster_rcnn as bench

    from detect.config import dump_config, from_dict
    from detect.models.registry import build_model

    config = from_dict({"backbone": {"name": "vgg16", "weights": "none"},
                        "input": {"min_size": bench.MIN_SIZE, "max_size": bench.MAX_SIZE, "canvas": [608, 800]},
                        "rpn": {"anchor_sizes": [128, 256, 512], "anchor_ratios": [0.5, 1.0, 2.0], "channels": 512,
                                "pre_nms_top_n_test": 6000, "post_nms_top_n_test": 300, "nms_iou": 0.7},
                        "roi": {"pool": "align", "size": 7, "sampling_ratio": 2, "head_dim": head_dim}})
    model = build_model(config, bench.CLASS_NAMES)
    model.save(os.path.join(folder, "model.keras"))
    dump_config(config, os.path.join(folder, "config.yaml"))
    return folder


def pictures(args):
    if args.images:
        from detect.benchmark.speed_table import load_images

        return load_images(args.images)[: args.count]
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (600, 800, 3), dtype=np.uint8) for _ in range(args.count)]


def ms_per_image(predictor, images, runs):
    for image in images:  # warm-up: traces / first session runs
        predictor.predict(image)
    passes = []
    for _ in range(runs):
        start = time.perf_counter()
        for image in images:
            predictor.predict(image)
        passes.append((time.perf_counter() - start) * 1e3 / len(images))
    return statistics.median(passes)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir")
    parser.add_argument("--images")
    parser.add_argument("--count", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--head-dim", type=int, default=1024,
                        help="VGG16 fc6/fc7 width without --model-dir (tf2onnx needed > 19 GB for the paper's 4096)")
    args = parser.parse_args()
    from detect.inference.export import export_model
    from detect.runtime import describe

    with tempfile.TemporaryDirectory() as work:
        model_dir = args.model_dir or vgg16_folder(work, args.head_dim)
        export_dir = os.path.join(work, "onnx")
        export_model(model_dir, "onnx", export_dir)
        tf_path, onnx_path = detect.load(model_dir), detect.load(export_dir)
        images = pictures(args)
        # Same detections first (a different answer would make the timing moot).
        diffs = []
        for image in images:
            a, b = tf_path.predict(image), onnx_path.predict(image)
            n = min(len(a["boxes"]), len(b["boxes"]))
            diffs.append(float(np.abs(a["boxes"][:n] - b["boxes"][:n]).max()) if n else 0.0)
        rows = []
        for round_index in range(1, args.rounds + 1):
            tf_ms = ms_per_image(tf_path, images, args.runs)
            onnx_ms = ms_per_image(onnx_path, images, args.runs)
            rows.append({"round": round_index, "tf_ms": tf_ms, "onnx_ms": onnx_ms, "ratio": onnx_ms / tf_ms})
            print(f"round {round_index}: TF {tf_ms:.1f} ms/image, ONNX Runtime {onnx_ms:.1f} ms/image, "
                  f"ONNX/TF {onnx_ms / tf_ms:.2f}", flush=True)
    import onnxruntime

    print(json.dumps({
        "model": args.model_dir or f"vgg16 paper configuration, fc6/fc7 {args.head_dim} (random weights)",
        "images": len(images),
        "cpu": describe(), "onnxruntime": onnxruntime.__version__, "max_box_difference_px": max(diffs),
        "tf_ms": statistics.median(r["tf_ms"] for r in rows), "onnx_ms": statistics.median(r["onnx_ms"] for r in rows),
        "ratio_median": statistics.median(r["ratio"] for r in rows), "rounds": rows,
        "load_average": os.getloadavg()[0],
    }))


if __name__ == "__main__":
    main()
