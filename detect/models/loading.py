"""Load a `.keras` model file, or say in one line why it is not a readable model file.

A `.keras` file is a zip archive holding config.json, metadata.json and model.weights.h5.
Before Keras sees it the file is checked, so that a damaged file is a DetectError naming
the path and the reason instead of a BadZipFile / KeyError traceback, a misleading "File
not found", or (flipped bytes inside the weights, which h5py reads by seeking and so
never CRC-checks) a model that loads with wrong weights:

    model.keras: not a readable model file (0 bytes)
    model.keras: not a readable model file (truncated: the zip archive has no end record)
    model.keras: not a readable model file (model.weights.h5 fails its CRC check: damaged bytes)
    model.keras: not a readable model file (the archive holds no config.json)
"""

import json
import os
import zipfile
import zlib

from detect.errors import DetectError

_ZIP_MAGIC = b"PK\x03\x04"
_REQUIRED = ("config.json", "model.weights.h5")


def check_model_file(path):
    """Raise DetectError unless `path` is an intact .keras archive (sizes, zip, CRCs, members).

    Reads the whole file once (CRC-32 of every member; about a second for VGG16's 550 MB).
    """
    if not os.path.exists(path):
        raise DetectError(f"{path}: model file not found")
    if not os.path.isfile(path):
        raise DetectError(f"{path}: not a readable model file (not a regular file)")
    size = os.path.getsize(path)
    if size == 0:
        raise DetectError(f"{path}: not a readable model file (0 bytes)")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            head = f.read(4)
        if head == _ZIP_MAGIC:
            raise DetectError(f"{path}: not a readable model file (truncated: the zip archive has no end record)")
        raise DetectError(f"{path}: not a readable model file (not a zip archive, as .keras files are)")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            for member in _REQUIRED:
                if member not in names:
                    raise DetectError(f"{path}: not a readable model file (the archive holds no {member})")
            bad = archive.testzip()
            if bad is not None:
                raise DetectError(f"{path}: not a readable model file ({bad} fails its CRC check: damaged bytes)")
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as e:
        raise DetectError(f"{path}: not a readable model file (damaged zip archive: {_first_line(e)})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DetectError(f"{path}: not a readable model file (config.json is not valid JSON: {_first_line(e)})") \
            from None
    _refuse_legacy(path, config)


# Two-stage models saved before the detector was built from parts (RPN and RoI heads as
# layers) were one flat class; their weights do not map onto the parts.
_LEGACY_CLASSES = ("FasterRCNN", "FastRCNN")


def _refuse_legacy(path, config):
    if isinstance(config, dict) and config.get("class_name") in _LEGACY_CLASSES:
        raise DetectError(
            f"{path}: saved by an earlier version of detect ({config['class_name']}, before the detector was "
            "built from parts); retrain it with this version (detect train CONFIG --out FOLDER --overwrite)"
        )


def load_model_file(path):
    """The keras.Model saved in the .keras file `path` (compile=False), or DetectError.

    The file is checked first (check_model_file); what Keras still refuses in an intact
    archive (a config it cannot rebuild, weights that do not fit) is reported with the path
    in one line too.
    """
    import keras

    from detect.models.registry import import_models

    check_model_file(path)
    import_models()
    try:
        return keras.saving.load_model(path, compile=False)
    except (OSError, ValueError, KeyError, TypeError) as e:
        # The archive is intact: its content does not fit this version of the code.
        raise DetectError(
            f"{path}: cannot rebuild the saved model ({type(e).__name__}: {_first_line(e)}); "
            "was it written by another version of detect?"
        ) from None


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else "no details"


def load_model_dir(model_dir):
    """(model, resolved config) from a folder written by `detect train`."""
    import yaml

    from detect.config import from_dict

    model_path = os.path.join(model_dir, "model.keras")
    config_path = os.path.join(model_dir, "config.yaml")
    for path in (model_path, config_path):
        if not os.path.isfile(path):
            raise DetectError(f"{model_dir} is not a model folder: {os.path.basename(path)} is missing")
    with open(config_path, encoding="utf-8") as f:
        raw = yaml.safe_load(f) or {}
    raw.get("dataset", {}).pop("class_names", None)
    config = from_dict(raw)
    return load_model_file(model_path), config
