"""A model folder always holds a model and the config it was trained with, never a mix.

`detect train` into a folder that already holds a run (model.keras, last.keras, an
interrupted run's backup/ or a step-state file) compares the new resolved config with the
folder's config.yaml before anything is written:

- the same config: nothing is rewritten; training resumes (or reruns) as before;
- another config: a DetectError naming the folder and the first keys that differ, so a
  crash or Ctrl-C can never leave the old model.keras paired with a new config.yaml;
- another config with `--overwrite`: the old run's files are removed first, then the new
  config is written (atomically), so every moment the folder is consistent: old model +
  old config, or no model + a config, or (after the first epoch) new model + new config.
"""

import os
import shutil

import yaml

from detect.config import DEFAULTS, dump_config
from detect.errors import DetectError

# Files and folders of a run (train.py, alternating.py, rcnn_train.py, callbacks).
RUN_FILES = (
    "model.keras", "last.keras", "backup", "alternating.json", "rcnn_state.json", "history.csv",
    "loss_curve.png", "train_summary.json", "tensorboard", "feature_cache",
)
_MODEL_STATE = ("model.keras", "last.keras", "backup", "alternating.json", "rcnn_state.json")


def holds_run(out_dir):
    """True when `out_dir` holds a trained model or an interrupted run's state."""
    return any(os.path.exists(os.path.join(out_dir, name)) for name in _MODEL_STATE)


def _normalized(config):
    """The config as config.yaml stores it (YAML round trip: tuples -> lists, ...)."""
    return yaml.safe_load(yaml.safe_dump(config, sort_keys=False))


def config_differences(old, new, prefix=""):
    """Dotted keys whose values differ between two nested config dicts, in key order."""
    keys = list(new) + [k for k in old if k not in new]
    out = []
    for key in keys:
        a, b = old.get(key, "<unset>"), new.get(key, "<unset>")
        if isinstance(a, dict) or isinstance(b, dict):
            a, b = a if isinstance(a, dict) else {}, b if isinstance(b, dict) else {}
            out += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append((f"{prefix}{key}", a, b))
    return out


def _with_defaults(saved, defaults):
    """`saved` with the keys it leaves out filled from `defaults` (a config.yaml written
    by hand or by an older version may omit them)."""
    out = dict(saved)
    for key, value in defaults.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = _with_defaults(out[key], value)
    return out


def _short(value, limit=40):
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_saved(path):
    try:
        with open(path, encoding="utf-8") as f:
            saved = yaml.safe_load(f)
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
        raise DetectError(f"{path}: cannot read the config of the model in this folder ({e}); "
                          "use --overwrite to replace the model") from None
    return saved if isinstance(saved, dict) else {}


def prepare_model_folder(out_dir, config, overwrite=False):
    """Write config.yaml into `out_dir` unless that would pair it with another run's model.

    config: the resolved config dict (with dataset.class_names). Raises DetectError when
    the folder holds a run with a different config and `overwrite` is False.
    """
    config_path = os.path.join(out_dir, "config.yaml")
    if not holds_run(out_dir):
        dump_config(config, config_path)
        return
    if os.path.isfile(config_path):
        saved = _with_defaults(_read_saved(config_path), DEFAULTS)
        diffs = config_differences(saved, _normalized(config))
    else:
        diffs = [("config.yaml", "<missing>", "<new>")]
    if not diffs:
        return  # same config: resume / rerun, the files stay as they are
    if not overwrite:
        shown = ", ".join(f"{key}: {_short(old)} -> {_short(new)}" for key, old, new in diffs[:3])
        more = f" and {len(diffs) - 3} more" if len(diffs) > 3 else ""
        raise DetectError(
            f"{out_dir} holds a model trained with another config ({shown}{more}); "
            "use --overwrite to replace it, or --out NEW_FOLDER"
        )
    remove_run(out_dir)
    dump_config(config, config_path)


def remove_run(out_dir):
    """Remove a run's model files first (so no moment pairs them with a new config)."""
    for name in RUN_FILES:
        path = os.path.join(out_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)
