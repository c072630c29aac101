"""Type and range of every config key, checked once when a config is loaded.

The types follow config.DEFAULTS (a key whose default is a bool is a flag, a string key
holds a string, ...); RANGES adds what a default cannot say: the smallest and largest
value of a number, whether it may be null, the length of a list. A message names the
key, the value and the range:

    config key `training.epochs` must be an integer >= 1, got 0

Rules: integers are never floats or bools (`epochs: 1.5` is refused); a float key accepts
an integer (`learning_rate: 1`) and, because PyYAML reads `1e-3` as a string, a string
that parses as a number; a flag is true/false or 0/1; a list holds numbers (`anchor_sizes`).
"""

import math

from detect.errors import DetectError


class Num:
    """A number in [low, high] (open ends with low_open/high_open); None bound = unbounded."""

    def __init__(self, kind, low=None, high=None, low_open=False, high_open=False, null=False):
        self.kind, self.low, self.high = kind, low, high
        self.low_open, self.high_open, self.null = low_open, high_open, null

    def describe(self):
        noun = "an integer" if self.kind == "int" else "a number"
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high}")
        text = f"{noun} {' and '.join(parts)}" if parts else noun
        return text + (" or null" if self.null else "")

    def coerce(self, value):
        """The checked value (ints for int keys, floats for float keys); ValueError if bad."""
        if value is None and self.null:
            return None
        if isinstance(value, bool):
            raise ValueError
        if self.kind == "int":
            if not isinstance(value, int):
                raise ValueError
        else:
            if isinstance(value, str):
                value = float(value)  # "1e-3": PyYAML's YAML 1.1 reading of an exponent
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError
            value = float(value)
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            raise ValueError
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            raise ValueError
        return value


class Seq:
    """A list of `item` numbers, `length` long (None: any non-empty length)."""

    def __init__(self, item, length=None, null=False):
        self.item, self.length, self.null = item, length, null

    def describe(self):
        count = f"{self.length} " if self.length else ""
        noun = self.item.describe().replace("an integer", "integers").replace("a number", "numbers")
        return f"a list of {count}{noun}" + (" or null" if self.null else "")

    def coerce(self, value):
        if value is None and self.null:
            return None
        if not isinstance(value, (list, tuple)) or not value:
            raise ValueError
        if self.length is not None and len(value) != self.length:
            raise ValueError
        return [self.item.coerce(v) for v in value]


class Flag:
    """true/false, or 0/1."""

    null = False

    def describe(self):
        return "true/false (or 1/0)"

    def coerce(self, value):
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ValueError


class Text:
    """A string (e.g. a path); null allowed when the default is null."""

    def __init__(self, null=False):
        self.null = null

    def describe(self):
        return "a string" + (" or null" if self.null else "")

    def coerce(self, value):
        if value is None and self.null:
            return None
        if not isinstance(value, str):
            raise ValueError
        return value


class Canvas:
    """null, [height, width] of positive integers, or `per_image`."""

    null = True

    def __init__(self):
        self.pair = Seq(_count(), 2, null=True)

    def describe(self):
        return "[height, width], per_image or null"

    def coerce(self, value):
        if value == "per_image":
            return value
        return self.pair.coerce(value)


def _count(low=1, null=False):
    return Num("int", low, null=null)


def _rate(null=False):
    return Num("float", 0, low_open=True, null=null)


def _fraction(low_open=False, high_open=False):
    return Num("float", 0, 1, low_open=low_open, high_open=high_open)


_IOU = _fraction(low_open=True)
_NONNEG = Num("float", 0)

# Keys whose range a default cannot tell. Number, list and null-default keys must be here
# (tests/test_config_schema.py checks that every such key of DEFAULTS is listed).
RANGES = {
    "seed": _count(0),
    "backbone.width": _count(),
    "fpn.channels": _count(),
    "input.min_size": _count(),
    "input.max_size": _count(),
    "input.max_boxes": _count(),
    "input.canvas": Canvas(),
    "rpn.anchor_sizes": Seq(_rate()),
    "rpn.anchor_ratios": Seq(_rate()),
    "rpn.channels": _count(),
    "rpn.fg_iou": _IOU,
    "rpn.bg_iou": _fraction(),
    "rpn.batch_size": _count(),
    "rpn.positive_fraction": _IOU,
    "rpn.pre_nms_top_n_train": _count(),
    "rpn.post_nms_top_n_train": _count(),
    "rpn.pre_nms_top_n_test": _count(),
    "rpn.post_nms_top_n_test": _count(),
    "rpn.nms_iou": _IOU,
    "rpn.min_size": _NONNEG,
    "rpn.loss_weight": _NONNEG,
    "rpn.conv_depth": _count(),
    "rpn.score_threshold": _fraction(),
    "roi.size": _count(),
    "roi.sampling_ratio": _count(),
    "roi.batch_size": _count(),
    "roi.positive_fraction": _IOU,
    "roi.fg_iou": _IOU,
    "roi.bg_iou_low": _fraction(),
    "roi.head_dim": _count(),
    "roi.box_weights": Seq(_rate(), 4),
    "roi.head_svd": Seq(_count(), 2, null=True),
    "roi.loss_weight": _NONNEG,
    "roi.canonical_size": _rate(),
    "roi.head_convs": _count(0),
    "roi.head_fcs": _count(),
    "mask.pool_size": _count(),
    "mask.channels": _count(),
    "mask.num_convs": _count(),
    "mask.num_rois": _count(null=True),
    "mask.loss_weight": _NONNEG,
    "mask.threshold": _fraction(low_open=True, high_open=True),
    "test.score_threshold": _fraction(),
    "test.nms_iou": _IOU,
    "test.max_detections": _count(),
    "test.min_box_size": _NONNEG,
    "proposals.max_proposals": _count(),
    "proposals.max_side": _count(),
    "training.epochs": _count(),
    "training.batch_size": _count(),
    "training.steps_per_epoch": _count(null=True),
    "training.learning_rate": _rate(),
    "training.momentum": _fraction(high_open=True),
    "training.weight_decay": _NONNEG,
    "training.warmup_steps": _count(0),
    "training.clipnorm": _rate(null=True),
    "training.alternating_epochs": Seq(_count(), 4, null=True),
    "training.time_budget_minutes": _rate(null=True),
    "training.val_steps": _count(null=True),
    "training.val_every": _count(),
    "rcnn.crop_size": _count(),
    "rcnn.context": _count(0),
    "rcnn.chunk_size": _count(),
    "rcnn.finetune_epochs": _count(0, null=True),  # 0 = no CNN fine-tuning
    "rcnn.fg_per_batch": _count(),
    "rcnn.bg_per_batch": _count(),
    "rcnn.fg_iou": _IOU,
    "rcnn.svm_c": _rate(),
    "rcnn.svm_pos_weight": _rate(),
    "rcnn.svm_bias_scale": _rate(),
    "rcnn.svm_epochs": _count(),
    "rcnn.feature_norm": _rate(),
    "rcnn.neg_iou": _fraction(),
    "rcnn.hard_negative_rounds": _count(0),  # 0 = random negatives only
    "rcnn.initial_negatives": _count(),
    "rcnn.max_negatives": _count(),
    "rcnn.hard_threshold": Num("float"),
    "rcnn.evict_threshold": Num("float"),
    "rcnn.reg_iou": _fraction(),
    "rcnn.ridge_lambda": _NONNEG,
    "rcnn.ridge_max_samples": _count(),
}


def spec_for(dotted, default):
    """The spec of a key: RANGES, else derived from its default (flag, string, path)."""
    if dotted in RANGES:
        return RANGES[dotted]
    if isinstance(default, bool):
        return Flag()
    if default is None or isinstance(default, str):
        return Text(null=default is None)
    raise KeyError(f"config key `{dotted}` (default {default!r}) has no entry in config_schema.RANGES")


def check_types(config, defaults, free_keys, prefix=""):
    """Check every leaf of `config` (defaults already merged in); normalizes in place
    (ints -> floats for float keys, 0/1 -> bool for flags). Raises DetectError."""
    for key, default in defaults.items():
        dotted, value = f"{prefix}{key}", config[key]
        if isinstance(default, dict):
            check_types(value, default, free_keys, dotted + ".")
            continue
        if dotted in free_keys:
            continue
        spec = spec_for(dotted, default)
        try:
            config[key] = spec.coerce(value)
        except (ValueError, TypeError):
            raise DetectError(f"config key `{dotted}` must be {spec.describe()}, got {value!r}") from None
