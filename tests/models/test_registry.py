"""Each setting is declared once: every default in detect.config.DEFAULTS equals the
default of the constructor argument it feeds (the tables in detect.models.registry)."""

import inspect

import pytest

from detect.config import DEFAULTS, from_dict
from detect.models import registry
from detect.models.backbones import build_backbone
from detect.models.rcnn import RCNN
from detect.models.roi_heads import RoIHeads
from detect.models.rpn import RegionProposalNetwork

TABLES = [
    (registry.RPN_KEYS, RegionProposalNetwork),
    (registry.ROI_HEADS_KEYS, RoIHeads),
    (registry.BACKBONE_KEYS, build_backbone),
    (registry.RCNN_KEYS, RCNN),
]


def normalized(value):
    return list(value) if isinstance(value, (tuple, list)) else value


@pytest.mark.parametrize("table,constructor", TABLES, ids=lambda x: getattr(x, "__name__", ""))
def test_config_defaults_equal_constructor_defaults(table, constructor):
    parameters = inspect.signature(constructor).parameters
    checked = 0
    for key, argument in table.items():
        assert argument in parameters, f"{key} feeds {constructor.__name__}({argument}), which does not exist"
        default = parameters[argument].default
        if default is inspect.Parameter.empty:
            continue  # a required argument: the config always gives it
        section, name = key.split(".")
        assert normalized(DEFAULTS[section][name]) == normalized(default), (key, DEFAULTS[section][name], default)
        checked += 1
    assert checked >= len(table) - 1


def test_every_rpn_key_feeds_the_rpn():
    # A key added to the rpn section without a constructor argument would be ignored.
    assert set(registry.RPN_KEYS) == {f"rpn.{name}" for name in DEFAULTS["rpn"]}


def test_fast_rcnn_has_no_rpn_and_faster_rcnn_has_one():
    config = from_dict({"backbone": {"width": 8}, "input": {"min_size": 64, "max_size": 64},
                        "roi": {"head_dim": 16}})
    faster = registry.build_model(config, ["a"])
    fast = registry.build_model({**config, "detector": "fast_rcnn"}, ["a"])
    assert faster.rpn is not None and fast.rpn is None
    assert "rpn" not in fast.get_config() or fast.get_config()["rpn"] is None
    assert faster.rpn.anchor_sizes == tuple(float(s) for s in DEFAULTS["rpn"]["anchor_sizes"])
