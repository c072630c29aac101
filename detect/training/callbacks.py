"""Training callbacks of our own; the rest are keras.callbacks configured in train.py."""

import contextlib
import csv
import math
import os
import time

import keras

from detect.errors import DetectError
from detect.io import atomic_write


def _set_lr(optimizer, value):
    optimizer.learning_rate.assign(float(value))


class LinearWarmup(keras.callbacks.Callback):
    """Linear learning-rate warm-up from `start_factor * lr` to `lr` over `steps` steps.

    Only acts during the first `steps` optimizer iterations (resumed runs skip it), so
    ReduceLROnPlateau and friends keep control of the learning rate afterwards.
    """

    def __init__(self, learning_rate, steps, start_factor=0.001):
        super().__init__()
        self.learning_rate = float(learning_rate)
        self.steps = int(steps)
        self.start_factor = float(start_factor)

    def on_train_batch_begin(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step < self.steps:
            alpha = step / self.steps
            factor = self.start_factor * (1 - alpha) + alpha
            _set_lr(self.model.optimizer, self.learning_rate * factor)
        elif step == self.steps:
            _set_lr(self.model.optimizer, self.learning_rate)


class CosineDecay(keras.callbacks.Callback):
    """Cosine decay of the learning rate to 0 after `warmup_steps` (which LinearWarmup
    handles), over `total_steps` optimizer steps or, with `total_seconds`, over wall-clock
    time (for runs with a time budget: the rate reaches 0 when the budget ends, whatever
    the machine's speed)."""

    def __init__(self, learning_rate, total_steps=None, warmup_steps=0, total_seconds=None):
        super().__init__()
        self.learning_rate = float(learning_rate)
        self.total_steps = max(int(total_steps or 1), 1)
        self.warmup_steps = int(warmup_steps)
        self.total_seconds = float(total_seconds) if total_seconds else None
        self.start = None

    def on_train_begin(self, logs=None):
        self.start = time.monotonic()

    def _progress(self, step):
        if self.total_seconds:
            return (time.monotonic() - self.start) / self.total_seconds
        span = max(self.total_steps - self.warmup_steps, 1)
        return (step - self.warmup_steps) / span

    def on_train_batch_begin(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step <= self.warmup_steps:
            return
        progress = min(max(self._progress(step), 0.0), 1.0)
        _set_lr(self.model.optimizer, 0.5 * self.learning_rate * (1 + math.cos(math.pi * progress)))


class TimeBudget(keras.callbacks.Callback):
    """Stop training after the last epoch that can finish within `minutes` minutes (the
    next epoch is expected to take as long as the slowest one so far)."""

    def __init__(self, minutes):
        super().__init__()
        self.seconds = float(minutes) * 60.0
        self.start = None
        self.epoch_start = None
        self.longest = 0.0

    def on_train_begin(self, logs=None):
        self.start = time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        now = time.monotonic()
        self.longest = max(self.longest, now - self.epoch_start)
        if now - self.start + self.longest > self.seconds:
            print(f"\ntime budget of {self.seconds / 60:.1f} min reached after epoch {epoch + 1}")
            self.model.stop_training = True


class SkippedImagesGuard(keras.callbacks.Callback):
    """Stop training when more than `max_fraction` of the images could not be decoded."""

    def __init__(self, skipped, max_fraction=0.01):
        super().__init__()
        self.skipped = skipped
        self.max_fraction = float(max_fraction)
        self.tripped = False

    def on_train_batch_end(self, batch, logs=None):
        if self.skipped.fraction > self.max_fraction:
            self.tripped = True
            self.model.stop_training = True

    def check(self):
        if self.tripped:
            files = ", ".join(self.skipped.files[:3])
            raise DetectError(
                f"training stopped: {self.skipped.count} of {self.skipped.total} images are unreadable "
                f"(more than {self.max_fraction:.0%}), e.g. {files}"
            )


def finite_loss(logs):
    """False when any `*loss` value in a Keras logs dict is NaN or infinite."""
    return all(math.isfinite(float(v)) for k, v in (logs or {}).items() if k.endswith("loss"))


class StopOnNaN(keras.callbacks.TerminateOnNaN):
    """TerminateOnNaN that also checks the loss components and remembers the values and
    the last epoch that ended with finite losses, for `check` to report after model.fit
    has returned (so every callback has cleaned up)."""

    def __init__(self):
        super().__init__()
        self.epoch = 0
        self.last_good_epoch = None
        self.message = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_batch_end(self, batch, logs=None):
        if finite_loss(logs):
            return
        values = ", ".join(f"{k}={float(v):.4g}" for k, v in logs.items() if k.endswith("loss"))
        self.message = f"epoch {self.epoch + 1}, batch {batch + 1}: {values}"
        print(f"\nnon-finite loss at {self.message}; stopping training", flush=True)
        self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.message is None and finite_loss(logs):
            self.last_good_epoch = epoch + 1

    def check(self):
        """DetectError naming the loss values when training was stopped."""
        if self.message is None:
            return
        kept = (
            f"the checkpoints of the last finite epoch ({self.last_good_epoch}) are kept"
            if self.last_good_epoch
            else "no checkpoint was written with these weights"
        )
        raise DetectError(
            f"training stopped: the loss is not finite at {self.message}; {kept} "
            f"(lower training.learning_rate or set training.clipnorm)"
        )


class HistoryCSV(keras.callbacks.Callback):
    """history.csv, one row per finished epoch; on a resumed run, rows of epochs that are
    run again are removed first, so no row is lost or repeated.

    The first epoch this run starts (after BackupAndRestore restored it, wherever that
    callback sits in the list) decides which rows are kept.
    """

    def __init__(self, path):
        super().__init__()
        self.path = path
        self.keys = None
        self.trimmed = False

    def on_epoch_begin(self, epoch, logs=None):
        if not self.trimmed:
            self.trimmed = True
            self._keep_rows_before(epoch)

    def _keep_rows_before(self, start):
        rows = []
        if os.path.isfile(self.path):
            with open(self.path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                self.keys = [k for k in (reader.fieldnames or []) if k != "epoch"] or None
                rows = [r for r in reader if int(r["epoch"]) < start]
        self._write(rows)

    def _write(self, rows):
        with atomic_write(self.path) as f:
            if self.keys:
                writer = csv.DictWriter(f, ["epoch"] + self.keys, lineterminator="\n")
                writer.writeheader()
                writer.writerows(rows)

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        logs.setdefault("learning_rate", float(self.model.optimizer.learning_rate.numpy()))
        rows = []
        if os.path.isfile(self.path) and os.path.getsize(self.path) > 0:
            with open(self.path, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
        # Validation may run every few epochs: columns that appear later join the header.
        self.keys = sorted(set(self.keys or ()) | set(logs))
        rows.append({"epoch": epoch, **{k: logs.get(k, "") for k in self.keys}})
        self._write(rows)


class AtomicCheckpoint(keras.callbacks.ModelCheckpoint):
    """ModelCheckpoint that writes to a temporary file and renames it into place, so a
    crash mid-write never leaves a broken model file behind."""

    def __init__(self, filepath, **kwargs):
        self.final_path = filepath
        root, _ = os.path.splitext(filepath)
        super().__init__(root + ".partial.keras", **kwargs)

    def on_epoch_end(self, epoch, logs=None):
        if not finite_loss(logs):
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


class Throughput(keras.callbacks.Callback):
    """Training images per second, validation excluded: the time between each epoch's
    begin and end minus the time its validation took, over `batch_size` x steps run.

    One meter may serve several model.fit calls (the alternating schedule's steps).
    """

    def __init__(self, batch_size):
        super().__init__()
        self.batch_size = int(batch_size)
        self.images = 0
        self.seconds = 0.0
        self.epochs = 0
        self._epoch_start = self._test_start = None
        self._test_seconds = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start, self._test_seconds = time.perf_counter(), 0.0

    def on_train_batch_end(self, batch, logs=None):
        self.images += self.batch_size

    def on_test_begin(self, logs=None):
        self._test_start = time.perf_counter()

    def on_test_end(self, logs=None):
        if self._test_start is not None:
            self._test_seconds += time.perf_counter() - self._test_start
            self._test_start = None

    def on_epoch_end(self, epoch, logs=None):
        if self._epoch_start is not None:
            self.seconds += time.perf_counter() - self._epoch_start - self._test_seconds
            self.epochs += 1
            self._epoch_start = None

    @property
    def images_per_second(self):
        return self.images / self.seconds if self.seconds > 0 else None
