"""YAML configs: `_base_` inheritance, `--set a.b=c` overrides, validation against DEFAULTS.

A config is a plain nested dict. Every key a config may hold is listed in DEFAULTS with its
default value; a key that is not there is an error that names it and suggests the closest
valid key. Configs are translated into keyword arguments once, in each model's
`from_config`; layers never see a config object.
"""

import copy
import difflib
import os

import yaml

from detect.config_schema import check_types
from detect.errors import DetectError
from detect.io import atomic_write

# Keys whose value is a free-form mapping of keyword arguments (or null = off).
_FREE = None
_FREE_KEYS = {
    "callbacks.reduce_lr_on_plateau",
    "callbacks.early_stopping",
    "callbacks.coco_map",
}

DEFAULTS = {
    "detector": "faster_rcnn",
    "seed": 0,
    "backbone": {
        "name": "tiny",  # tiny | vgg16 | resnet50 | resnet101 | *_fpn | torchvision_* (configs/zoo)
        "weights": "none",  # none | imagenet | PATH
        "width": 32,  # tiny only: channels of the first block, doubled per block
    },
    "fpn": {
        "channels": 256,  # *_fpn backbones: channels of the pyramid levels P2..P6
        "norm": "none",  # none | batch (convs without bias + frozen BatchNorm: torchvision's v2)
    },
    "model": {
        "init": None,  # model folder (or zoo name) to start training from; its class predictor is re-initialised
    },
    "dataset": {
        "format": "coco",  # coco | voc | csv | yolo | labelme | cvat
        "classes": None,  # csv: class-mapping file; voc/yolo(darknet)/labelme/cvat: names list or file
        "train": {"annotations": None, "images": None, "split": None},
        "val": {"annotations": None, "images": None, "split": None},
        "test": {"annotations": None, "images": None, "split": None},
    },
    "input": {
        "min_size": 600,  # shorter side after resizing
        "max_size": 1000,  # longer side at most
        "flip": True,
        "max_boxes": 100,  # ground-truth boxes padded (label -1) to this count
        "cache": False,  # keep decoded uint8 images in a temporary file between epochs
        "canvas": None,  # landscape canvas [height, width] (portrait: its transpose); default min x max rounded to 32;
        # per_image: each image padded to its own size rounded up to 32 (torchvision's batching)
        "resize": "detect",  # detect (rounded sizes, antialiased) | torchvision (floor, plain bilinear)
        # auto: tf.data where TensorFlow is installed, else keras.utils.PyDataset (NumPy batches,
        # reader threads); tf_data | pydataset choose one (detect/data/splits.py)
        "loader": "auto",
    },
    "rpn": {
        "anchor_sizes": [128, 256, 512],
        "anchor_ratios": [0.5, 1.0, 2.0],
        "channels": 512,
        "fg_iou": 0.7,
        "bg_iou": 0.3,
        "batch_size": 256,
        "positive_fraction": 0.5,
        "pre_nms_top_n_train": 12000,
        "post_nms_top_n_train": 2000,
        "pre_nms_top_n_test": 6000,
        "post_nms_top_n_test": 300,
        "nms_iou": 0.7,
        "min_size": 0.0,
        "ignore_border": True,
        "loss_weight": 1.0,
        "conv_depth": 1,  # 3x3 convs of the RPN head (torchvision v2: 2)
        "anchor_rule": "centred",  # centred | torchvision (rounded, corner-anchored; see ops/anchors.py)
        "shared_anchor_sizes": False,  # pyramids: every anchor size on every level (MobileNetV3-FPN)
        "score_threshold": 0.0,  # proposals need objectness probability >= this (torchvision mobilenet: 0.05)
    },
    "roi": {
        "pool": "align",  # align | pool
        "size": 7,
        "sampling_ratio": 2,
        "batch_size": 128,
        "positive_fraction": 0.25,
        "fg_iou": 0.5,
        "bg_iou_low": 0.0,  # background IoU in [bg_iou_low, fg_iou); Fast R-CNN paper 0.1
        "head_dim": 4096,  # fc head width (fc6/fc7); ResNet backbones use res5 instead
        "box_weights": [10.0, 10.0, 5.0, 5.0],
        "head_svd": None,  # [r6, r7]: truncated SVD of fc6/fc7 applied by `detect export`
        "loss_weight": 1.0,
        "canonical_size": 224.0,  # *_fpn: an RoI of this side is pooled from P4 (FPN eq. 1)
        "aligned": True,  # RoIAlign's half-cell shift (detectron2); false: torchvision's roi_align
        "head_convs": 0,  # torchvision_* backbones: 3x3 conv + BN layers before the fc layers (v2: 4)
        "head_fcs": 2,  # torchvision_* backbones with head_convs: fc layers after them (v2: 1)
    },
    "mask": {  # detector mask_rcnn: the mask head (detect/models/mask_head.py)
        "pool_size": 14,  # RoIAlign side; masks are twice this (28)
        "channels": 256,
        "num_convs": 4,
        "num_rois": None,  # foreground RoIs per image it trains on (default roi.batch_size * positive_fraction)
        "loss_weight": 1.0,
        "threshold": 0.5,  # probability that is foreground when a mask is pasted into the image
        "paste": "detectron2",  # detectron2 | torchvision: how a 28 x 28 mask is resized into its box
    },
    "test": {
        "score_threshold": 0.05,
        "nms_iou": 0.5,
        "max_detections": 100,
        "min_box_size": 0.0,  # detections narrower/lower than this (canvas pixels) are dropped (torchvision 0.01)
        "precision": "float32",  # float32 | bf16 (Keras mixed_bfloat16 at inference; detect/inference/precision.py)
    },
    "proposals": {
        "train": None,  # proposal file (Fast R-CNN, R-CNN)
        "val": None,
        "test": None,
        "mode": "fast",
        "max_proposals": 2000,
        "max_side": 500,
    },
    "training": {
        "epochs": 30,
        "batch_size": 8,
        "steps_per_epoch": None,
        "optimizer": "sgd",  # sgd | adam | adamw
        "learning_rate": 0.01,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "warmup_steps": 100,
        "lr_schedule": "constant",  # constant | cosine
        "clipnorm": None,
        "mixed_precision": "auto",  # auto (mixed_float16 when a GPU is present) | on | off
        "schedule": "joint",  # joint | alternating
        "alternating_epochs": None,  # epochs of the 4 alternating steps (default: epochs each)
        "time_budget_minutes": None,  # stop after this many minutes (end of an epoch)
        "val_steps": None,  # validation batches per evaluation (default: the whole split)
        "val_every": 1,  # validate every N epochs
        "deterministic": False,  # TF op determinism (same seed -> same losses); GPU-safe kernels
    },
    "rcnn": {
        "crop_size": 224,  # warped region side (tiny: multiple of 16, VGG16 / ResNet: of 32)
        "context": 16,  # pixels of context around the box at the warped size
        "chunk_size": 128,  # crops per CNN call at inference (memory bound)
        "finetune_epochs": None,  # CNN fine-tuning epochs (default training.epochs; 0 = none)
        "fg_per_batch": 32,  # fine-tuning regions per batch with IoU >= fg_iou ...
        "bg_per_batch": 96,  # ... and below it (background)
        "fg_iou": 0.5,
        "svm_solver": "liblinear",  # liblinear (sklearn LinearSVC) | keras (Dense + hinge loss)
        "svm_c": 0.001,
        "svm_pos_weight": 2.0,
        "svm_bias_scale": 10.0,  # liblinear bias feature value
        "svm_epochs": 30,  # keras solver only
        "feature_norm": 20.0,  # features scaled to this mean L2 norm for SVMs and ridge
        "neg_iou": 0.3,  # SVM negatives: IoU below this with every box of the class
        "hard_negative_rounds": 2,
        "initial_negatives": 5000,  # random negatives per class before the first round
        "max_negatives": 100000,  # hard-negative cache per class (the hardest are kept)
        "hard_threshold": -1.0,  # negatives scoring above this are hard
        "evict_threshold": -1.2,  # cached negatives scoring below this are dropped
        "reg_iou": 0.6,  # box regression trains on proposals with IoU >= this
        "ridge_lambda": 1000.0,
        "ridge_max_samples": 20000,  # per class, a random subset beyond this
        "cache_dir": None,  # feature cache (default MODEL_DIR/feature_cache)
        "keep_cache": False,  # keep the feature cache after training
    },
    "callbacks": {
        "reduce_lr_on_plateau": _FREE,
        "early_stopping": _FREE,
        "model_checkpoint": {"enabled": True, "monitor": "val_loss", "mode": "auto", "save_best_only": True},
        "backup_and_restore": {"enabled": True},
        "tensorboard": {"enabled": True},
        "csv_logger": {"enabled": True},
        "terminate_on_nan": {"enabled": True},
        "coco_map": _FREE,  # {every: N epochs, max_images: M}: adds val_AP, val_AP50
    },
}

_REQUIRED_CHOICES = {
    "detector": ("rcnn", "fast_rcnn", "faster_rcnn", "mask_rcnn"),
    "backbone.name": ("tiny", "vgg16", "resnet50", "resnet101", "tiny_fpn", "resnet50_fpn", "resnet101_fpn",
                      "torchvision_resnet50_fpn", "torchvision_mobilenet_v3_large_fpn"),
    "fpn.norm": ("none", "batch"),
    "input.resize": ("detect", "torchvision"),
    "input.loader": ("auto", "tf_data", "pydataset"),
    "rpn.anchor_rule": ("centred", "torchvision"),
    "mask.paste": ("detectron2", "torchvision"),
    "dataset.format": ("coco", "voc", "csv", "yolo", "labelme", "cvat"),
    "roi.pool": ("align", "pool"),
    "training.optimizer": ("sgd", "adam", "adamw"),
    "training.schedule": ("joint", "alternating"),
    "training.lr_schedule": ("constant", "cosine"),
    "rcnn.svm_solver": ("liblinear", "keras"),
    "training.mixed_precision": ("auto", "on", "off"),
    "test.precision": ("float32", "bf16"),
}


def _merge(base, override):
    """Recursive dict merge; `override` wins. Neither argument is modified."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_yaml(path, seen=()):
    path = os.path.abspath(path)
    if path in seen:
        raise DetectError(f"{path}: `_base_` inheritance loops back to this file")
    if not os.path.isfile(path):
        raise DetectError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise DetectError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    except UnicodeDecodeError:
        raise DetectError(f"{path}: not a UTF-8 text file") from None
    if not isinstance(data, dict):
        raise DetectError(f"{path}: a config must be a YAML mapping")
    base = data.pop("_base_", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise DetectError(f"{path}: `_base_` must be a file path, got {base!r}")
    base_path = os.path.join(os.path.dirname(path), base)
    return _merge(_read_yaml(base_path, seen + (path,)), data)


def _parse_override(item):
    if "=" not in item:
        raise DetectError(f"--set {item!r}: expected key=value, e.g. training.epochs=5")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _set_key(config, dotted, value):
    node = config
    parts = dotted.split(".")
    for depth, part in enumerate(parts[:-1]):
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def _check_keys(config, defaults, prefix=""):
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if key not in defaults:
            close = difflib.get_close_matches(key, list(defaults), n=1)
            hint = f" (did you mean `{prefix}{close[0]}`?)" if close else ""
            raise DetectError(f"unknown config key `{dotted}`{hint}")
        expected = defaults[key]
        if isinstance(expected, dict):
            if not isinstance(value, dict):
                raise DetectError(f"config key `{dotted}` must be a mapping, got {value!r}")
            _check_keys(value, expected, dotted + ".")
        elif dotted in _FREE_KEYS and value is not None and not isinstance(value, dict):
            raise DetectError(f"config key `{dotted}` must be a mapping or null, got {value!r}")
        elif expected is not None and isinstance(value, dict):
            raise DetectError(f"config key `{dotted}` must not be a mapping, got {value!r}")


def _get(config, dotted):
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


def validate(config):
    """Raise DetectError for unknown keys, values of the wrong type or range (config_schema)
    or invalid choices; returns the config.

    Values are normalized in place: float keys given ints or strings such as "1e-3" become
    floats, 0/1 flags become bools.
    """
    _check_keys(config, DEFAULTS)
    check_types(config, DEFAULTS, _FREE_KEYS)
    for dotted, choices in _REQUIRED_CHOICES.items():
        value = _get(config, dotted)
        if value not in choices:
            raise DetectError(f"config key `{dotted}`: {value!r} is not one of {', '.join(choices)}")
    if config["input"]["min_size"] > config["input"]["max_size"]:
        raise DetectError("config: input.min_size must not exceed input.max_size")
    return config


def load_config(path, overrides=()):
    """Read a YAML config with `_base_` inheritance, apply `key=value` overrides, validate.

    Relative dataset paths are kept as written (they are relative to the working
    directory, as on the command line). Returns a nested dict with every default filled.
    """
    data = _read_yaml(path)
    for item in overrides:
        key, value = _parse_override(item)
        _set_key(data, key, value)
    _check_keys(data, DEFAULTS)
    return validate(_merge(DEFAULTS, data))


def from_dict(data):
    """Fill defaults into a config dict (e.g. one saved beside a model) and validate."""
    _check_keys(data, DEFAULTS)
    return validate(_merge(DEFAULTS, data))


def dump_config(config, path):
    """Write the resolved config as YAML (atomically)."""
    with atomic_write(path) as f:
        yaml.safe_dump(config, f, sort_keys=False)
