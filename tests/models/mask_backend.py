"""Run by tests/models/test_mask_rcnn.py in a process of its own (KERAS_BACKEND fixed at
import): build a Mask R-CNN, one compiled train step, compiled predict; prints JSON."""

import json
import sys

import keras
import numpy as np

from detect.config import from_dict
from detect.inference.predict_function import predict_function
from detect.models.registry import build_model


def main(backbone):
    keras.utils.set_random_seed(0)
    fpn = backbone == "tiny_fpn"
    config = from_dict({
        "detector": "mask_rcnn", "backbone": {"name": backbone, "width": 8}, "fpn": {"channels": 16},
        "input": {"min_size": 64, "max_size": 64, "max_boxes": 3},
        "rpn": {"anchor_sizes": [8, 16, 32, 64, 128] if fpn else [16, 32], "channels": 16, "batch_size": 32,
                "pre_nms_top_n_train": 100, "post_nms_top_n_train": 32, "pre_nms_top_n_test": 100,
                "post_nms_top_n_test": 16},
        "roi": {"batch_size": 16, "head_dim": 32, "canonical_size": 56.0},
        "mask": {"channels": 8, "num_convs": 1, "pool_size": 7},
        "test": {"max_detections": 5, "score_threshold": 0.0},
    })
    model = build_model(config, ["a", "b", "c"])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=True)
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    masks = np.zeros((2, 3, 64, 64), np.uint8)
    masks[0, 0, 10:30, 12:40] = 1
    batch = {
        "images": images, "image_shape": np.array([[64, 64], [64, 64]], np.int32),
        "gt_boxes": np.array([[[12, 10, 40, 30], [0, 0, 0, 0], [0, 0, 0, 0]], np.zeros((3, 4))], np.float32),
        "gt_labels": np.array([[2, -1, -1], [-1, -1, -1]], np.int32),
        "gt_masks": masks, "gt_mask_valid": np.array([[True, False, False], [False] * 3]),
    }
    logs = model.train_on_batch(batch, return_dict=True)
    run = predict_function(model)
    out = run({"images": images, "image_shape": batch["image_shape"], "scale": np.ones((2, 2), np.float32)})
    print(json.dumps({"logs": {k: float(v) for k, v in logs.items()}, "masks_shape": list(out["masks"].shape),
                      "masks_finite": bool(np.isfinite(out["masks"]).all())}))


if __name__ == "__main__":
    main(sys.argv[1])
