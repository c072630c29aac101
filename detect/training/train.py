"""`detect train`: datasets -> tf.data (or a PyDataset) -> model.fit with Keras callbacks -> a model folder.

A model folder holds model.keras (best by the monitored metric), last.keras, config.yaml
(resolved, with the class list), history.csv, loss_curve.png, train_summary.json and
tensorboard/. Training that is killed resumes from the last finished epoch when the same
command runs again (BackupAndRestore keeps weights, optimizer state and the epoch in
`backup/`). The trainer comes from TRAINERS (detector -> function); what the trainers share
is in detect/training/loop.py.
"""

import os
import shutil
import time

import keras

from detect.data.example_reader import SkippedImages
from detect.data.splits import load_split, pipeline
from detect.errors import DetectError
from detect.io import write_json
from detect.models.registry import build_model
from detect.runtime import describe, jit_compile
from detect.training import callbacks as cbs
from detect.training.alternating import train_alternating
from detect.training.init_from import apply_init
from detect.training.loop import (
    fit_model, plot_history, select_strategy, set_precision, steps_per_epoch, worker_out_dir,
)
from detect.training.model_folder import prepare_model_folder
from detect.training.optimizers import build_optimizer
from detect.training.rcnn_train import train_rcnn


def train_joint(config, out_dir, train_set, val_set, skipped, strategy, meter=None):
    """One model.fit of the whole detector (Faster R-CNN's approximate joint training,
    Fast R-CNN); returns the path of model.keras."""
    train_ds = pipeline(config, train_set, training=True, skipped=skipped)
    val = (pipeline(config, val_set, training=False), val_set) if val_set is not None else None
    with strategy.scope():
        model = build_model(config, train_set.classes)
        apply_init(model, config)
        model.compile(optimizer=build_optimizer(config["training"]), jit_compile=jit_compile())
    return fit_model(model, config, out_dir, train_ds, val, steps_per_epoch(config, train_set), skipped, meter=meter)


def _train_faster_rcnn(config, *args, **kwargs):
    schedule = {"joint": train_joint, "alternating": train_alternating}[config["training"]["schedule"]]
    return schedule(config, *args, **kwargs)


TRAINERS = {"faster_rcnn": _train_faster_rcnn, "fast_rcnn": train_joint, "rcnn": train_rcnn,
            "mask_rcnn": _train_faster_rcnn}


def deterministic_kernels():
    """Deterministic kernels, so that a seed reproduces a run as far as the backend allows
    (on TensorFlow RoIAlign then samples with gathers, which have deterministic GPU
    kernels; JAX's CPU and GPU kernels are deterministic already)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    elif backend == "torch":
        import torch

        torch.use_deterministic_algorithms(True, warn_only=True)


def _check_classes(train, val):
    if val is not None and list(train.classes) != list(val.classes):
        raise DetectError(
            f"train and val class lists differ: {train.classes} ({train.source}) vs {val.classes} ({val.source})"
        )


def prepare_training(config, out_dir, resume, overwrite=False):
    """Seed, check the output folder, load and check datasets; returns (config, train, val).

    config.yaml is written only where it cannot pair with another run's model
    (model_folder.prepare_model_folder; `overwrite` replaces such a run)."""
    keras.utils.set_random_seed(int(config["seed"]))
    if config["training"]["deterministic"]:
        deterministic_kernels()
    backup = os.path.join(out_dir, "backup")
    states = ("alternating.json", "rcnn_state.json")
    if resume and not os.path.isdir(backup) and not any(os.path.isfile(os.path.join(out_dir, s)) for s in states):
        raise DetectError(f"--resume: {out_dir} holds no interrupted run (no {backup})")
    if os.path.isdir(backup):
        print(f"resuming the interrupted run in {out_dir}")
    train_set = load_split(config, "train")
    if train_set is None:
        raise DetectError("config: dataset.train.annotations is required for training")
    val_set = load_split(config, "val")
    _check_classes(train_set, val_set)
    if len(train_set) < config["training"]["batch_size"]:
        raise DetectError(
            f"{train_set.source}: {len(train_set)} images are fewer than training.batch_size="
            f"{config['training']['batch_size']}"
        )
    _check_writable(out_dir)
    config = {**config, "dataset": {**config["dataset"], "class_names": list(train_set.classes)}}
    prepare_model_folder(out_dir, config, overwrite=overwrite)
    return config, train_set, val_set


def _check_writable(folder):
    """Create `folder` and write a probe file in it: a DetectError before any training
    when it cannot hold the model (read-only, not a folder, no permission)."""
    probe = os.path.join(folder, f".write-test-{os.getpid()}")
    try:
        os.makedirs(folder, exist_ok=True)
        with open(probe, "w", encoding="utf-8"):
            pass
        os.remove(probe)
    except OSError as e:
        raise DetectError(f"cannot write to the output folder {folder}: {e.strerror or e}") from None


def train(config, out_dir, resume=False, strategy="auto", overwrite=False):
    """Train the detector a resolved config describes; returns a dict of output paths and
    the training throughput (images_per_second: training images over training seconds,
    validation excluded)."""
    strategy = select_strategy(strategy)
    chief_dir = out_dir
    out_dir, is_chief = worker_out_dir(strategy, out_dir)
    config, train_set, val_set = prepare_training(config, out_dir, resume, overwrite=overwrite)
    if set_precision(config["training"]["mixed_precision"]):
        print("training with mixed precision (mixed_float16)")
    if config["detector"] not in TRAINERS:
        raise DetectError(f"detector `{config['detector']}` cannot be trained (available: {', '.join(TRAINERS)})")
    start = time.monotonic()
    skipped = SkippedImages(len(train_set))
    meter = cbs.Throughput(config["training"]["batch_size"])
    model_path = TRAINERS[config["detector"]](config, out_dir, train_set, val_set, skipped, strategy, meter=meter)
    minutes = (time.monotonic() - start) / 60
    outputs = {"model": model_path, "config": os.path.join(out_dir, "config.yaml"), "minutes": round(minutes, 2)}
    history = os.path.join(out_dir, "history.csv")
    if os.path.exists(history):
        outputs["history"] = history
        outputs["loss_curve"] = plot_history(history, os.path.join(out_dir, "loss_curve.png"))
    rate = meter.images_per_second
    outputs.update(epochs=meter.epochs, images_per_second=None if rate is None else round(rate, 2))
    # The speed figure is only comparable with the machine named beside it.
    write_json(os.path.join(out_dir, "train_summary.json"),
               {**outputs, "skipped_images": skipped.count, "machine": describe()})
    if not is_chief:
        shutil.rmtree(out_dir, ignore_errors=True)
        outputs["model"] = os.path.join(chief_dir, "model.keras")
    return outputs
