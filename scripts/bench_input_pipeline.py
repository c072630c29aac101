#!/usr/bin/env python3
"""Does the input pipeline starve training? Step time with the real tf.data pipeline vs
the same model fed one batch already in memory.

Usage: .venv/bin/python scripts/bench_input_pipeline.py [CONFIG] [--steps 60] [--rounds 3]
Prints one JSON line with the median step times and their ratio (pipeline / in-memory).
The two feeds alternate over several rounds so machine noise hits both alike.
"""

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import detect  # noqa: E402,F401  (CPU settings made before TensorFlow starts: detect/runtime.py)
import tensorflow as tf  # noqa: E402

from detect.config import load_config  # noqa: E402
from detect.models.registry import build_model  # noqa: E402
from detect.data.splits import load_split, pipeline  # noqa: E402
from detect.training.optimizers import build_optimizer  # noqa: E402


def seconds_per_step(model, dataset, steps):
    iterator = iter(dataset)
    model.train_function(iterator)  # warm-up (traced already)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_function(iterator)
    return (time.perf_counter() - start) / steps


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("config", nargs="?", default="configs/faster_rcnn/tiny_shapes.yaml")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    config = load_config(args.config)
    train_set = load_split(config, "train")
    real = pipeline(config, train_set, training=True)
    batch = next(iter(real))
    in_memory = tf.data.Dataset.from_tensors(batch).repeat()
    model = build_model(config, train_set.classes)
    model.compile(optimizer=build_optimizer(config["training"]))
    model.make_train_function()
    # One pass over the data first, so a cached pipeline is measured warm, as in training.
    seconds_per_step(model, real, len(train_set) // config["training"]["batch_size"])
    times = {"pipeline": [], "in_memory": []}
    for _ in range(args.rounds):
        times["pipeline"].append(seconds_per_step(model, real, args.steps))
        times["in_memory"].append(seconds_per_step(model, in_memory, args.steps))
    result = {name: round(statistics.median(values), 4) for name, values in times.items()}
    result["ratio"] = round(result["pipeline"] / result["in_memory"], 3)
    result["runs"] = times
    print(json.dumps(result))


if __name__ == "__main__":
    main()
