"""--precision bf16: Keras' mixed_bfloat16 on the convolutions and dense layers, boxes and
scores in float32; its detections match float32's on a tiny model (same label and IoU >=
0.95 for every float32 detection scoring above 0.5)."""

import keras
import numpy as np
import pytest

from detect.config import from_dict
from detect.errors import DetectError
from detect.inference.precision import apply_precision, bf16_support, check_precision, precision_of
from detect.inference.predictor import Predictor
from detect.models.registry import build_model
from detect.ops.boxes import pairwise_iou_np

CLASSES = ["circle", "rectangle", "triangle"]


def tiny_config(**test):
    return from_dict({
        "backbone": {"name": "tiny", "width": 8}, "input": {"min_size": 64, "max_size": 64},
        "rpn": {"anchor_sizes": [16, 32], "channels": 16, "post_nms_top_n_test": 20},
        "roi": {"head_dim": 32}, "test": {"score_threshold": 0.0, "max_detections": 10, **test},
    })


def confident_model(config):
    """A random tiny Faster R-CNN whose class scores spread over [0, 1] (an untrained one
    scores every box about 1 / (K + 1)): the predictor's class weights scaled up."""
    keras.utils.set_random_seed(0)
    model = build_model(config, CLASSES)
    cls = model.roi_heads.predictor.cls
    cls.kernel.assign(cls.kernel.numpy() * 300.0)
    return model


def images():
    """Two 64x64 images with a few flat rectangles on noise (structure for the RPN)."""
    rng = np.random.default_rng(1)
    out = []
    for _ in range(2):
        image = rng.integers(0, 60, (64, 64, 3), dtype=np.uint8)
        for _ in range(3):
            x, y = rng.integers(0, 40, 2)
            image[y : y + 20, x : x + 16] = rng.integers(100, 255, 3)
        out.append(image)
    return out


def test_bf16_detections_match_float32():
    config = tiny_config()
    model = confident_model(config)
    expected = Predictor(model, config, precision="float32").predict_batch(images())
    actual = Predictor(model, config, precision="bf16").predict_batch(images())
    confident = 0
    for want, got in zip(expected, actual):
        assert got["boxes"].dtype == np.float32 and got["scores"].dtype == np.float32
        for box, score, label in zip(want["boxes"], want["scores"], want["labels"]):
            if score <= 0.5:
                continue
            confident += 1
            same = got["labels"] == label
            assert same.any(), f"no bf16 detection of class {label}"
            iou = pairwise_iou_np(box[None], got["boxes"][same])[0]
            assert iou.max() >= 0.95, (box, got["boxes"][same], iou)
            assert np.abs(got["scores"][same][iou.argmax()] - score) < 0.05
    assert confident >= 4  # the comparison is not vacuous


def test_bf16_keeps_boxes_and_scores_in_float32():
    model = build_model(tiny_config(), CLASSES)
    apply_precision(model, "bf16")
    assert precision_of(model) == "bf16"
    assert model.dtype_policy.name == "float32"  # inputs (proposals, scale) are not cast
    for part in (model.rpn, model.roi_heads, model.roi_heads.pooler, model.roi_heads.predictor,
                 model.roi_heads.predictor.cls, model.rpn.head.objectness, model.rpn.head.deltas):
        assert part.dtype_policy.name == "float32", part.name
    convs = [layer for layer in model.backbone.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs and all(layer.compute_dtype == "bfloat16" for layer in convs)
    assert all(v.dtype == "float32" for v in model.weights)  # weights are not copied or cast
    apply_precision(model, "float32")
    assert all(layer.compute_dtype == "float32" for layer in convs)


def test_config_precision_is_used_and_checked():
    config = tiny_config(precision="bf16")
    assert Predictor(build_model(config, CLASSES), config).precision == "bf16"
    with pytest.raises(DetectError, match=r"^config key `test\.precision`: 'fp16' is not one of float32, bf16$"):
        tiny_config(precision="fp16")
    with pytest.raises(DetectError, match=r"^precision 'half': expected one of float32, bf16$"):
        check_precision("half")


def test_bf16_support_reads_cpu_flags():
    assert bf16_support({"avx512f", "avx512_bf16"}) == ["avx512_bf16"]
    assert bf16_support({"amx_bf16", "amx_tile"}) == ["amx_bf16"]
    assert bf16_support({"avx2"}) == []


def test_bf16_mask_rcnn_keeps_rois_and_mask_logits_in_float32():
    config = from_dict({
        "detector": "mask_rcnn", "backbone": {"name": "tiny", "width": 8}, "input": {"min_size": 48, "max_size": 64},
        "rpn": {"anchor_sizes": [16, 32], "channels": 16, "post_nms_top_n_test": 20},
        "roi": {"head_dim": 32}, "mask": {"channels": 8, "num_convs": 2, "pool_size": 7},
        "test": {"max_detections": 5, "score_threshold": 0.0},
    })
    model = build_model(config, CLASSES)
    predictor = Predictor(model, config, precision="bf16")
    head = model.mask_head
    assert head.dtype_policy.name == "float32" and head.predictor.dtype_policy.name == "float32"
    assert all(conv.compute_dtype == "bfloat16" for conv in head.convs)
    result = predictor.predict(images()[0])
    assert result["masks"].dtype == bool and len(result["masks"]) == len(result["boxes"]) > 0
