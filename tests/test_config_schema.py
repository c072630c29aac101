"""Every config key has a type and a range (detect/config_schema.py), checked at load."""

import pytest

from detect.config import DEFAULTS, _FREE_KEYS, load_config
from detect.config_schema import RANGES, spec_for
from detect.errors import DetectError


def _leaves(node, prefix=""):
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


@pytest.fixture
def config_path(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("detector: faster_rcnn\n", encoding="utf-8")
    return str(path)


def test_every_key_has_a_spec_and_every_range_names_a_key():
    leaves = dict(_leaves(DEFAULTS))
    for dotted, default in leaves.items():
        if dotted not in _FREE_KEYS:
            spec_for(dotted, default)  # raises KeyError for a number key missing from RANGES
    assert set(RANGES) <= set(leaves), set(RANGES) - set(leaves)


def test_defaults_pass_their_own_ranges(config_path):
    config = load_config(config_path)
    assert config["training"]["epochs"] == DEFAULTS["training"]["epochs"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("training.epochs=0", "`training.epochs` must be an integer >= 1, got 0"),
        ("training.epochs=-1", "`training.epochs` must be an integer >= 1, got -1"),
        ("training.epochs=1.5", "`training.epochs` must be an integer >= 1, got 1.5"),
        ("training.epochs=true", "`training.epochs` must be an integer >= 1, got True"),
        ("training.batch_size=0", "`training.batch_size` must be an integer >= 1, got 0"),
        ("training.learning_rate=0", "`training.learning_rate` must be a number > 0, got 0"),
        ("training.learning_rate=.nan", "`training.learning_rate` must be a number > 0, got nan"),
        ("rpn.anchor_sizes=abc", "`rpn.anchor_sizes` must be a list of numbers > 0, got 'abc'"),
        ("rpn.anchor_sizes=[]", "`rpn.anchor_sizes` must be a list of numbers > 0, got []"),
        ("rpn.anchor_ratios=[1,-2]", "`rpn.anchor_ratios` must be a list of numbers > 0, got [1, -2]"),
        ("roi.box_weights=[1,1,1]", "`roi.box_weights` must be a list of 4 numbers > 0, got [1, 1, 1]"),
        ("test.score_threshold=1.5", "`test.score_threshold` must be a number >= 0 and <= 1, got 1.5"),
        ("input.flip=2", "`input.flip` must be true/false (or 1/0), got 2"),
        ("dataset.train.images=5", "`dataset.train.images` must be a string or null, got 5"),
        ("training.steps_per_epoch=0", "`training.steps_per_epoch` must be an integer >= 1 or null, got 0"),
    ],
)
def test_bad_value_names_key_value_and_range(config_path, override, message):
    with pytest.raises(DetectError) as info:
        load_config(config_path, [override])
    assert str(info.value) == f"config key {message}"


def test_ints_are_accepted_for_floats_and_0_1_for_flags(config_path):
    config = load_config(config_path, ["training.learning_rate=1", "input.flip=0", "training.clipnorm=5"])
    assert config["training"]["learning_rate"] == 1.0 and isinstance(config["training"]["learning_rate"], float)
    assert config["input"]["flip"] is False
    assert config["training"]["clipnorm"] == 5.0


def test_null_where_allowed(config_path):
    config = load_config(config_path, ["training.steps_per_epoch=null", "input.canvas=[64, 96]"])
    assert config["training"]["steps_per_epoch"] is None
    assert config["input"]["canvas"] == [64, 96]
