"""Faults during `detect train`: an output folder that is read-only, not a folder, or fills
up mid-run, and a loss that becomes NaN. Each ends in one `error:` line (exit code 2, no
traceback) and leaves the checkpoints of the last good epoch whole. A disk that fills up
while `detect evaluate` or `detect predict` writes leaves their earlier JSON files whole.

Killing a run and rerunning it is tested where the resuming code lives:
tests/training/test_train.py::test_sigkill_then_rerun_resumes (training) and
tests/proposals/test_cache.py::test_sigkill_mid_run_then_rerun_does_only_the_rest
(`detect proposals`).

Read-only folders are simulated (root ignores permission bits): Python-level writes under
the folder raise PermissionError, as the kernel would. A full disk is simulated the same
way: files opened for writing under the folder take a few bytes, then fail with ENOSPC.
"""

import builtins
import csv
import errno
import glob
import json
import os
import shutil

import keras
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

import detect.training.loop as loop_module
from detect.cli import main
from detect.data.shapes import generate_shapes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 2  # optimizer steps per epoch in every run here


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    generate_shapes(str(out), num_images=20, image_size=64, seed=5, progress=False)
    return out


@pytest.fixture(autouse=True)
def quiet(monkeypatch):
    monkeypatch.setenv("DETECT_QUIET", "1")  # one progress line per epoch


def write_config(folder, shapes, **training):
    config = {
        "_base_": os.path.join(ROOT, "configs/faster_rcnn/tiny_shapes.yaml"),
        "backbone": {"width": 8},
        "dataset": {
            "train": {"annotations": str(shapes / "annotations/train.json"), "images": str(shapes / "images")},
            "val": {"annotations": None},
        },
        "input": {"min_size": 64, "max_size": 64, "cache": False},
        "rpn": {"channels": 16, "pre_nms_top_n_train": 200, "post_nms_top_n_train": 64, "post_nms_top_n_test": 32},
        "roi": {"batch_size": 16, "head_dim": 32},
        "training": {"epochs": 2, "batch_size": 4, "steps_per_epoch": STEPS, "warmup_steps": 2,
                     "time_budget_minutes": None, **training},
        "callbacks": {"tensorboard": {"enabled": False}},
    }
    path = os.path.join(folder, "config.yaml")
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f)
    return path


def train_cli(config, out):
    return CliRunner().invoke(main, ["train", str(config), "--out", str(out)])


def assert_one_line_error(result, *fragments):
    """Exit code 2, no traceback, and stderr is one `error:` line (after the progress bar
    that `detect predict` draws, whose updates end in carriage returns)."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.strip().splitlines() if "%|" not in line]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def snapshot(folder):
    """{relative path: bytes} of every file under folder."""
    out = {}
    for path in glob.glob(os.path.join(folder, "**"), recursive=True):
        if os.path.isfile(path):
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


def history_epochs(out):
    with open(os.path.join(out, "history.csv"), newline="", encoding="utf-8") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def load_checkpoint(path):
    import detect.models.detector  # noqa: F401  (registers the model classes)

    return keras.saving.load_model(path)


def finite_weights(model):
    return all(np.isfinite(w).all() for w in model.get_weights())


def under(folder, path):
    if isinstance(path, int):
        return False
    path = os.path.abspath(os.fsdecode(path))
    return path == folder or path.startswith(folder + os.sep)


def writes(mode):
    return any(c in mode for c in "wax+")


def make_read_only(monkeypatch, folder):
    """Python-level writes, renames, removals and new folders under `folder` raise EACCES."""
    folder = os.path.abspath(folder)
    real_open, real_os_open = builtins.open, os.open

    def denied(path):
        return PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))

    def guarded_open(file, mode="r", *args, **kwargs):
        if under(folder, file) and writes(mode):
            raise denied(file)
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, *args, **kwargs):
        if under(folder, path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise denied(path)
        return real_os_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(os, "open", guarded_os_open)
    for name in ("replace", "rename", "remove", "unlink", "mkdir", "rmdir"):
        real = getattr(os, name)

        def guarded(*paths, _real=real, **kwargs):
            for path in paths[:2]:
                if under(folder, path):
                    raise denied(path)
            return _real(*paths, **kwargs)

        monkeypatch.setattr(os, name, guarded)


class _FullFile:
    """A file on a disk with `room` bytes left: the write that would pass it fails (ENOSPC)."""

    def __init__(self, file, room):
        self._file = file
        self._room = room

    def write(self, data):
        if len(data) > self._room:
            self._file.write(data[: self._room])
            self._room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(data)
        return self._file.write(data)

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._file.close()


def fill_disk(monkeypatch, folder, room=2048, names=None):
    """Files opened for writing under `folder` (whose names contain one of `names`, when
    given) fail once `room` bytes are written."""
    folder = os.path.abspath(folder)
    real_open = builtins.open

    def full_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        hit = under(folder, file) and writes(mode)
        if hit and names:
            hit = any(name in os.path.basename(os.fsdecode(file)) for name in names)
        return _FullFile(handle, room) if hit else handle

    monkeypatch.setattr(builtins, "open", full_open)


class AtEpochBegin(keras.callbacks.Callback):
    """Runs `action(model)` when epoch `epoch` (0-based) begins."""

    def __init__(self, epoch, action):
        super().__init__()
        self.epoch, self.action = epoch, action

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            self.action(self.model)


def run_first(monkeypatch, callback):
    """Put `callback` at the head of the callbacks that `detect train` configures."""
    real = loop_module.make_callbacks
    monkeypatch.setattr(loop_module, "make_callbacks", lambda *a, **k: [callback] + real(*a, **k))


@pytest.fixture(scope="module")
def trained(shapes, tmp_path_factory):
    """A model folder after one finished epoch."""
    folder = tmp_path_factory.mktemp("trained")
    result = train_cli(write_config(str(folder), shapes, epochs=1), folder / "model")
    assert result.exit_code == 0, result.output
    return folder / "model"


# --------------------------------------------------------------------------- tests
def test_read_only_output_folder_is_one_line_and_keeps_the_checkpoint(tmp_path, shapes, trained, monkeypatch):
    out = tmp_path / "model"
    shutil.copytree(trained, out)
    before = snapshot(out)
    assert {"model.keras", "last.keras", "history.csv", "config.yaml"} <= set(before)
    config = write_config(str(tmp_path), shapes, epochs=3)
    make_read_only(monkeypatch, out)
    result = train_cli(config, out)
    line = assert_one_line_error(result)
    assert line == f"error: cannot write to the output folder {out}: Permission denied"
    monkeypatch.undo()
    assert snapshot(out) == before


def test_output_path_under_a_file_is_one_line(tmp_path, shapes):
    (tmp_path / "notes.txt").write_text("a file, not a folder\n")
    out = tmp_path / "notes.txt" / "model"
    result = train_cli(write_config(str(tmp_path), shapes), out)
    line = assert_one_line_error(result)
    assert line == f"error: cannot write to the output folder {out}: Not a directory"


def test_disk_full_mid_run_keeps_the_last_good_checkpoint_then_resumes(tmp_path, shapes, monkeypatch):
    out = str(tmp_path / "model")
    config = write_config(str(tmp_path), shapes, epochs=2)
    kept = {}

    def disk_fills(model):
        kept.update(snapshot(out))
        fill_disk(monkeypatch, out)

    # The disk fills up during epoch 2: its checkpoints cannot be written.
    run_first(monkeypatch, AtEpochBegin(1, disk_fills))
    result = train_cli(config, out)
    assert_one_line_error(result, "cannot save the checkpoint", out, "No space left on device",
                          "the previous one is kept")
    monkeypatch.undo()
    assert {"model.keras", "last.keras"} <= set(kept)
    after = snapshot(out)
    for name in ("model.keras", "last.keras", "history.csv"):
        assert after[name] == kept[name], name  # byte for byte the epoch-1 files
    assert not [name for name in after if "partial" in name or name.endswith(".tmp")]
    assert int(load_checkpoint(os.path.join(out, "last.keras")).optimizer.iterations.numpy()) == STEPS
    assert history_epochs(out) == [0]

    # Space freed, the same command again: epoch 2 runs once more, no history row lost.
    result = train_cli(config, out)
    assert result.exit_code == 0, result.output
    assert "resuming" in result.stdout
    assert history_epochs(out) == [0, 1]
    assert int(load_checkpoint(os.path.join(out, "last.keras")).optimizer.iterations.numpy()) == 2 * STEPS


def test_nan_loss_stops_prints_the_losses_and_keeps_the_last_good_checkpoint(tmp_path, shapes, monkeypatch):
    out = str(tmp_path / "model")
    config = write_config(str(tmp_path), shapes, epochs=3)

    first_epoch_files = {}

    def diverge(model):
        first_epoch_files.update(snapshot(out))
        # What a diverging run ends with: every weight NaN, here from epoch 2 on.
        for variable in model.trainable_variables:
            variable.assign(np.full(variable.shape, np.nan, variable.dtype))

    run_first(monkeypatch, AtEpochBegin(1, diverge))
    result = train_cli(config, out)
    line = assert_one_line_error(result, "training stopped: the loss is not finite at epoch 2, batch 1",
                                 "loss=nan", "rpn_cls_loss=nan",
                                 "the checkpoints of the last finite epoch (1) are kept")
    assert "learning_rate" in line
    assert "non-finite loss at epoch 2, batch 1: loss=nan" in result.stdout
    after = snapshot(out)
    for name in ("model.keras", "last.keras"):
        assert after[name] == first_epoch_files[name], name
        model = load_checkpoint(os.path.join(out, name))
        assert finite_weights(model) and int(model.optimizer.iterations.numpy()) == STEPS
    assert history_epochs(out) == [0, 1]  # the row of epoch 2 records its NaN loss
    assert not os.path.exists(os.path.join(out, "backup"))  # a rerun starts afresh


def test_absurd_learning_rate_saves_no_nan_model(tmp_path, shapes):
    out = tmp_path / "model"
    config = write_config(str(tmp_path), shapes, epochs=2, steps_per_epoch=8, optimizer="sgd", learning_rate=1e6,
                          warmup_steps=0)
    result = train_cli(config, out)
    assert_one_line_error(result, "training stopped: the loss is not finite at epoch 1",
                          "no checkpoint was written with these weights")
    assert not (out / "model.keras").exists() and not (out / "last.keras").exists()


GT = {
    "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
               {"id": 2, "file_name": "b.jpg", "width": 64, "height": 48}],
    "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0},
                    {"id": 2, "image_id": 2, "category_id": 1, "bbox": [30, 5, 10, 30], "area": 300, "iscrowd": 0}],
    "categories": [{"id": 1, "name": "square"}],
}


def write_json(path, data):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)
    return str(path)


@pytest.mark.parametrize("full_at", ["detections.json", "metrics.json"])
def test_disk_full_while_evaluating_keeps_the_earlier_files_whole(tmp_path, monkeypatch, full_at):
    annotations = write_json(tmp_path / "gt.json", GT)
    hit = {"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9}
    miss = {"image_id": 2, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.8}
    out = tmp_path / "eval"
    first = CliRunner().invoke(main, ["evaluate", "--detections", write_json(tmp_path / "d1.json", [hit]),
                                      "--annotations", annotations, "--out", str(out)])
    assert first.exit_code == 0, first.output
    before = snapshot(out)

    fill_disk(monkeypatch, str(out), room=100, names=[full_at])
    result = CliRunner().invoke(main, ["evaluate", "--detections", write_json(tmp_path / "d2.json", [hit, miss]),
                                       "--annotations", annotations, "--out", str(out)])
    monkeypatch.undo()
    assert_one_line_error(result, "no space left on device")
    after = snapshot(out)
    assert sorted(after) == sorted(before)  # no temporary file left behind
    assert after[full_at] == before[full_at]  # the file being written when the disk filled: unchanged
    for name in ("detections.json", "metrics.json"):
        json.loads(after[name])  # each file is whole: the earlier version or the complete new one


def test_disk_full_while_predicting_keeps_the_earlier_detections_whole(tmp_path, monkeypatch, make_model_dir):
    from PIL import Image

    model_dir = make_model_dir(["square"], tmp_path / "model")
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.fromarray(np.full((48, 64, 3), 60 * i, np.uint8)).save(images / f"{i}.png")
    out = tmp_path / "out"

    first = CliRunner().invoke(main, ["predict", str(model_dir), str(images / "0.png"), "--out", str(out)])
    assert first.exit_code == 0, first.output
    before = (out / "detections.json").read_bytes()
    fill_disk(monkeypatch, str(out), room=100, names=["detections.json"])
    result = CliRunner().invoke(main, ["predict", str(model_dir), str(images), "--out", str(out)])
    monkeypatch.undo()
    assert_one_line_error(result, "no space left on device")
    assert (out / "detections.json").read_bytes() == before
    # No temporary file left (detections_coco.json is from the first, successful run).
    assert sorted(os.listdir(out)) == ["0.jpg", "1.jpg", "detections.json", "detections_coco.json"]
