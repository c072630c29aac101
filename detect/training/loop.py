"""What every trainer shares: strategy and precision, the configured callbacks, model.fit
into a model folder, steps per epoch, loss curves. The trainers (detect.training.train's
joint training, alternating.py, rcnn_train.py) import from here; nothing here imports them.
"""

import contextlib
import logging
import os

import keras
import numpy as np

from detect.errors import DetectError
from detect.io import atomic_path
from detect.training import callbacks as cbs

log = logging.getLogger(__name__)

STRATEGIES = ("auto", "default", "mirrored", "multi_worker")


class SingleDevice:
    """The strategy of the JAX and PyTorch backends: no tf.distribute, one process on the
    backend's default device (a scope that does nothing, no cluster)."""

    cluster_resolver = None

    def scope(self):
        return contextlib.nullcontext()


def select_strategy(name):
    """auto | default | mirrored | multi_worker -> a tf.distribute strategy (TensorFlow
    backend); SingleDevice on the other backends, where auto and default are all there is."""
    if name not in STRATEGIES:
        raise DetectError(f"--strategy: unknown strategy {name!r} ({', '.join(STRATEGIES)})")
    if keras.backend.backend() != "tensorflow":
        if name in ("mirrored", "multi_worker"):
            raise DetectError(f"--strategy {name} is a tf.distribute strategy: it needs KERAS_BACKEND=tensorflow "
                              f"(the {keras.backend.backend()} backend trains on one device)")
        return SingleDevice()
    import tensorflow as tf

    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "auto" and len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _options(spec):
    spec = dict(spec or {})
    enabled = spec.pop("enabled", True)
    return enabled, spec


def make_callbacks(config, out_dir, steps_per_epoch, val, skipped, meter=None):
    """The configured callbacks, in the order they must run; val = (tf_dataset, Dataset);
    `meter`: a callbacks.Throughput that counts training images and seconds."""
    c, t = config["callbacks"], config["training"]
    has_val = val is not None
    monitor_default = "val_loss" if has_val else "loss"
    out = [meter] if meter is not None else []
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
        out.append(cbs.AtomicCheckpoint(os.path.join(out_dir, "model.keras"), monitor=monitor, save_best_only=best_only,
                                        **opts))
        out.append(cbs.AtomicCheckpoint(os.path.join(out_dir, "last.keras")))
    enabled, opts = _options(c["csv_logger"])
    if enabled:
        out.append(cbs.HistoryCSV(os.path.join(out_dir, "history.csv")))
    enabled, opts = _options(c["tensorboard"])
    if enabled:
        from detect.data.splits import has_tensorflow

        if has_tensorflow():  # Keras writes TensorBoard logs with tf.summary
            out.append(keras.callbacks.TensorBoard(os.path.join(out_dir, "tensorboard"), **opts))
        else:
            log.warning("callbacks.tensorboard: no TensorBoard logs without TensorFlow (history.csv and "
                        "loss_curve.png still record the run)")
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


def fit_model(model, config, out_dir, train_ds, val, steps, skipped, epochs=None, meter=None):
    """model.fit with the configured callbacks writing into out_dir; val = (tf_dataset, Dataset)."""
    t = config["training"]
    callbacks = make_callbacks(config, out_dir, steps, val, skipped, meter)
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
        with atomic_path(model_path) as tmp:
            model.save(tmp)
    return model_path


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
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path


def steps_per_epoch(config, train_set):
    """Batches per epoch; training pipelines repeat, so unreadable images never end an
    epoch early (and Keras never sees a dataset of unknown length run dry)."""
    t = config["training"]
    return t["steps_per_epoch"] or max(len(train_set) // t["batch_size"], 1)


def has_gpu():
    """True where the Keras backend computes on a GPU."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_logical_devices("GPU"))
    if backend == "jax":
        import jax

        return any(device.platform == "gpu" for device in jax.devices())
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    return False


def set_precision(mode):
    """mixed_float16 on GPUs (auto) or when asked (on); float32 otherwise."""
    use = mode == "on" or (mode == "auto" and has_gpu())
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


