"""`detect train`: datasets -> tf.data -> model.fit with Keras callbacks -> a model folder.

A model folder holds model.keras (best by the monitored metric), last.keras, config.yaml
(resolved, with the class list), history.csv, loss_curve.png and tensorboard/. Training
that is killed resumes from the last finished epoch when the same command runs again
(BackupAndRestore keeps weights, optimizer state and the epoch in `backup/`).
"""

import contextlib
import json
import logging
import os
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

from detect.data.pipeline import SkippedImages
# The data glue lives in detect/data/splits.py; re-exported for the callers of this module.
from detect.data.splits import load_split, pipeline, proposals_for  # noqa: F401
from detect.errors import DetectError
from detect.models.registry import build_model
from detect.training import callbacks as cbs
from detect.training.model_folder import prepare_model_folder

log = logging.getLogger(__name__)


def select_strategy(name):
    """auto | default | mirrored | multi_worker -> a tf.distribute strategy."""
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "auto" and len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    if name in ("auto", "default"):
        return tf.distribute.get_strategy()
    raise DetectError(f"--strategy: unknown strategy {name!r} (auto, mirrored, multi_worker)")


def make_optimizer(training):
    kwargs = {"learning_rate": training["learning_rate"]}
    if training.get("clipnorm"):
        kwargs["clipnorm"] = training["clipnorm"]
    name = training["optimizer"]
    if name == "sgd":
        return keras.optimizers.SGD(momentum=training["momentum"], weight_decay=training["weight_decay"] or None, **kwargs)
    if name == "adamw":
        return keras.optimizers.AdamW(weight_decay=training["weight_decay"], **kwargs)
    return keras.optimizers.Adam(**kwargs)


class AtomicCheckpoint(keras.callbacks.ModelCheckpoint):
    """ModelCheckpoint that writes to a temporary file and renames it into place, so a
    crash mid-write never leaves a broken model file behind."""

    def __init__(self, filepath, **kwargs):
        self.final_path = filepath
        root, _ = os.path.splitext(filepath)
        super().__init__(root + ".partial.keras", **kwargs)

    def on_epoch_end(self, epoch, logs=None):
        if not cbs.finite_loss(logs):
            return  # the weights of a diverged epoch never replace a checkpoint
        # A partial file left by a crash is not this epoch's: only a file saved now moves.
        _remove_quietly(self.filepath)
        try:
            super().on_epoch_end(epoch, logs)
            if os.path.exists(self.filepath):
                os.replace(self.filepath, self.final_path)
        except OSError as e:
            _remove_quietly(self.filepath)
            kept = "the previous one is kept" if os.path.exists(self.final_path) else "none was written"
            raise DetectError(f"cannot save the checkpoint {self.final_path}: {e.strerror or e}; {kept}") from None
        except BaseException:
            _remove_quietly(self.filepath)
            raise


def _remove_quietly(path):
    with contextlib.suppress(OSError):
        os.remove(path)


def _options(spec):
    spec = dict(spec or {})
    enabled = spec.pop("enabled", True)
    return enabled, spec


def make_callbacks(config, out_dir, steps_per_epoch, val, skipped):
    """The configured callbacks, in the order they must run; val = (tf_dataset, Dataset)."""
    c, t = config["callbacks"], config["training"]
    has_val = val is not None
    monitor_default = "val_loss" if has_val else "loss"
    out = []
    if c.get("coco_map") and has_val:
        from detect.training.map_callback import CocoMapCallback

        out.append(CocoMapCallback.from_config(config, val[0], val[1], **c["coco_map"]))
    out.append(cbs.LinearWarmup(t["learning_rate"], t["warmup_steps"]))
    if t["lr_schedule"] == "cosine":
        budget = t.get("time_budget_minutes")
        out.append(
            cbs.CosineDecay(
                t["learning_rate"],
                total_steps=steps_per_epoch * t["epochs"],
                warmup_steps=t["warmup_steps"],
                total_seconds=budget * 60 if budget else None,
            )
        )
    if c.get("reduce_lr_on_plateau") is not None:
        out.append(keras.callbacks.ReduceLROnPlateau(**{"monitor": monitor_default, **c["reduce_lr_on_plateau"]}))
    if c.get("early_stopping") is not None:
        out.append(keras.callbacks.EarlyStopping(**{"monitor": monitor_default, **c["early_stopping"]}))
    enabled, opts = _options(c["terminate_on_nan"])
    if enabled:
        out.append(cbs.StopOnNaN())
    enabled, opts = _options(c["model_checkpoint"])
    if enabled:
        monitor = opts.pop("monitor", monitor_default)
        if monitor.startswith("val_") and not has_val:
            monitor = monitor[4:]
        best_only = opts.pop("save_best_only", True)
        out.append(AtomicCheckpoint(os.path.join(out_dir, "model.keras"), monitor=monitor, save_best_only=best_only, **opts))
        out.append(AtomicCheckpoint(os.path.join(out_dir, "last.keras")))
    enabled, opts = _options(c["csv_logger"])
    if enabled:
        out.append(cbs.HistoryCSV(os.path.join(out_dir, "history.csv")))
    enabled, opts = _options(c["tensorboard"])
    if enabled:
        out.append(keras.callbacks.TensorBoard(os.path.join(out_dir, "tensorboard"), **opts))
    if t.get("time_budget_minutes"):
        out.append(cbs.TimeBudget(t["time_budget_minutes"]))
    out.append(cbs.SkippedImagesGuard(skipped))
    enabled, opts = _options(c["backup_and_restore"])
    if enabled:
        # Last: an epoch counts as finished for a resumed run only once its checkpoints
        # and history row are written, so a crash or a full disk in between loses no row.
        # Two copies: a kill while the backup is being written leaves the previous one to
        # resume from (Keras falls back to it when the newest file cannot be read).
        backup = keras.callbacks.BackupAndRestore(os.path.join(out_dir, "backup"), **{"double_checkpoint": True, **opts})
        out.append(backup)
    return out


def _check_classes(train, val):
    if val is not None and list(train.classes) != list(val.classes):
        raise DetectError(
            f"train and val class lists differ: {train.classes} ({train.source}) vs {val.classes} ({val.source})"
        )


def plot_history(history_csv, path):
    """Loss curves (total and components, train and val) from history.csv as a PNG."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(history_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    epochs = [int(r["epoch"]) + 1 for r in rows]
    names = [k for k in rows[0] if k.endswith("loss") and not k.startswith("val_")]
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3), squeeze=False)
    for ax, name in zip(axes[0], names):
        for key, style in ((name, "-"), ("val_" + name, "--o")):
            values = np.array([float(r[key]) if r.get(key) not in (None, "") else np.nan for r in rows])
            known = ~np.isnan(values)  # validation may run only every few epochs
            if known.any():
                ax.plot(np.array(epochs)[known], values[known], style, markersize=3, label=key)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def fit_model(model, config, out_dir, train_ds, val, steps, skipped, epochs=None):
    """model.fit with the configured callbacks writing into out_dir; val = (tf_dataset, Dataset)."""
    t = config["training"]
    callbacks = make_callbacks(config, out_dir, steps, val, skipped)
    model.fit(
        train_ds,
        validation_data=val[0] if val else None,
        # A known count keeps Keras from warning that a filtered dataset "ran out of data".
        validation_steps=t.get("val_steps") or (-(-len(val[1]) // t["batch_size"]) if val else None),
        validation_freq=t.get("val_every") or 1,
        epochs=epochs or t["epochs"],
        steps_per_epoch=steps,
        callbacks=callbacks,
        verbose=1 if os.environ.get("DETECT_QUIET") != "1" else 2,
        shuffle=False,
    )
    for callback in callbacks:
        if isinstance(callback, (cbs.SkippedImagesGuard, cbs.StopOnNaN)):
            callback.check()
    model_path = os.path.join(out_dir, "model.keras")
    if not os.path.exists(model_path):
        # Checkpointing disabled in the config: the final weights are the model.
        tmp = os.path.join(out_dir, "model.partial.keras")
        model.save(tmp)
        os.replace(tmp, model_path)
    return model_path


def prepare_training(config, out_dir, resume, overwrite=False):
    """Seed, check the output folder, load and check datasets; returns (config, train, val).

    config.yaml is written only where it cannot pair with another run's model
    (model_folder.prepare_model_folder; `overwrite` replaces such a run)."""
    keras.utils.set_random_seed(int(config["seed"]))
    # Deterministic kernels, so that a seed reproduces a run as far as TensorFlow allows.
    tf.config.experimental.enable_op_determinism()
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


def steps_per_epoch(config, train_set):
    """Batches per epoch; training pipelines repeat, so unreadable images never end an
    epoch early (and Keras never sees a dataset of unknown length run dry)."""
    t = config["training"]
    return t["steps_per_epoch"] or max(len(train_set) // t["batch_size"], 1)


def set_precision(mode):
    """mixed_float16 on GPUs (auto) or when asked (on); float32 otherwise."""
    use = mode == "on" or (mode == "auto" and tf.config.list_logical_devices("GPU"))
    keras.mixed_precision.set_global_policy("mixed_float16" if use else "float32")
    return bool(use)


def worker_out_dir(strategy, out_dir):
    """(folder, is_chief): in multi-worker training only the chief writes to out_dir; the
    other workers still run every save (they take part in its collectives) but into
    their own scratch folders."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if not task_type:
        return out_dir, True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    chief = task_type == "chief" or (task_type == "worker" and resolver.task_id == 0 and not has_chief)
    return (out_dir, True) if chief else (os.path.join(out_dir, f".worker{resolver.task_id}"), False)


def train(config, out_dir, resume=False, strategy="auto", overwrite=False):
    """Train the detector a resolved config describes; returns a dict of output paths."""
    strategy = select_strategy(strategy)
    chief_dir = out_dir
    out_dir, is_chief = worker_out_dir(strategy, out_dir)
    config, train_set, val_set = prepare_training(config, out_dir, resume, overwrite=overwrite)
    if set_precision(config["training"]["mixed_precision"]):
        print("training with mixed precision (mixed_float16)")
    t = config["training"]
    start = time.monotonic()
    skipped = SkippedImages(len(train_set))
    if t["schedule"] == "alternating" and config["detector"] == "faster_rcnn":
        from detect.training.alternating import train_alternating

        model_path = train_alternating(config, out_dir, train_set, val_set, skipped, strategy)
    elif config["detector"] == "rcnn":
        from detect.training.rcnn_train import train_rcnn

        model_path = train_rcnn(config, out_dir, train_set, val_set, skipped, strategy)
    else:
        train_ds = pipeline(config, train_set, training=True, skipped=skipped)
        val = (pipeline(config, val_set, training=False), val_set) if val_set is not None else None
        steps = steps_per_epoch(config, train_set)
        with strategy.scope():
            model = build_model(config, train_set.classes)
            model.compile(optimizer=make_optimizer(t), jit_compile=False)
        model_path = fit_model(model, config, out_dir, train_ds, val, steps, skipped)
    minutes = (time.monotonic() - start) / 60
    outputs = {"model": model_path, "config": os.path.join(out_dir, "config.yaml"), "minutes": round(minutes, 2)}
    history = os.path.join(out_dir, "history.csv")
    if os.path.exists(history):
        outputs["history"] = history
        outputs["loss_curve"] = plot_history(history, os.path.join(out_dir, "loss_curve.png"))
    with open(os.path.join(out_dir, "train_summary.json"), "w", encoding="utf-8") as f:
        json.dump({**outputs, "skipped_images": skipped.count}, f, indent=2)
    if not is_chief:
        shutil.rmtree(out_dir, ignore_errors=True)
        outputs["model"] = os.path.join(chief_dir, "model.keras")
    return outputs
