"""model.init: a detector starts from another's weights; the class predictor follows the new classes."""

import numpy as np
import pytest

from detect.config import from_dict
from detect.errors import DetectError
from detect.models.registry import build_model
from detect.training.init_from import initialize_from

SMALL = {
    "backbone": {"name": "tiny", "width": 8},
    "input": {"min_size": 64, "max_size": 64},
    "rpn": {"anchor_sizes": [16, 32], "channels": 16, "post_nms_top_n_test": 20},
    "roi": {"head_dim": 32},
}


def _weights(layer):
    return [np.asarray(w) for w in layer.weights]


def test_every_part_but_the_predictor_takes_the_init_weights(make_model_dir):
    from detect.models.loading import load_model_dir

    folder = make_model_dir(["circle", "rectangle", "triangle"])
    init, _ = load_model_dir(folder)
    model = build_model(from_dict(SMALL), ["a", "b", "c", "d", "e"])
    before = _weights(model.roi_heads.predictor)
    done = initialize_from(model, str(folder))
    assert done["predictor"] == "re-initialised" and set(done["parts"]) == {"backbone", "rpn", "box_head"}
    for part in ("backbone", "rpn"):
        for a, b in zip(_weights(getattr(model, part)), _weights(getattr(init, part))):
            np.testing.assert_array_equal(a, b)
    for a, b in zip(_weights(model.roi_heads.box_head), _weights(init.roi_heads.box_head)):
        np.testing.assert_array_equal(a, b)
    # The predictor has the new class count (5 + background scores, 5 x 4 deltas), untouched.
    shapes = [w.shape for w in _weights(model.roi_heads.predictor)]
    assert shapes == [(32, 6), (6,), (32, 20), (20,)]
    for a, b in zip(_weights(model.roi_heads.predictor), before):
        np.testing.assert_array_equal(a, b)


def test_the_same_classes_keep_the_predictor(make_model_dir):
    from detect.models.loading import load_model_dir

    folder = make_model_dir(["circle", "rectangle"])
    init, _ = load_model_dir(folder)
    model = build_model(from_dict(SMALL), ["circle", "rectangle"])
    assert initialize_from(model, str(folder))["predictor"] == "kept"
    for a, b in zip(_weights(model.roi_heads.predictor), _weights(init.roi_heads.predictor)):
        np.testing.assert_array_equal(a, b)


def test_another_architecture_is_a_one_line_error(make_model_dir):
    folder = make_model_dir(["circle"])
    # Three anchor sizes: the RPN head predicts 9 anchors a cell, the init's 6.
    other = {**SMALL, "rpn": {**SMALL["rpn"], "anchor_sizes": [16, 32, 64]}}
    model = build_model(from_dict(other), ["circle"])
    with pytest.raises(DetectError, match=r"model.init: the rpn of .* does not fit this config's \(.*9.* vs .*6.*\)"):
        initialize_from(model, str(folder))


def test_an_unknown_source_names_the_zoo():
    model = build_model(from_dict(SMALL), ["circle"])
    with pytest.raises(DetectError, match="neither a model folder nor a zoo name .*fasterrcnn_resnet50_fpn"):
        initialize_from(model, "no/such/folder")
