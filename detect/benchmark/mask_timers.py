"""Speed of Mask R-CNN: the Faster R-CNN stages plus the mask head (detect benchmark row
`mask_rcnn`).

The four stage columns are those of Faster R-CNN (the same backbone, RPN, box head and
postprocess); the mask head (RoIAlign 14x14 + FCN + deconv + per-class logits over the D
final detections, sigmoid of the detected class) is timed as its own Stage and
reported in ms per image in the notes and under `mask_head` in the result; end-to-end is
`predict_step`, masks included (pasting into the image is host-side and not timed).
"""

import copy

import keras

from detect.benchmark.timers import Stage, _feature_specs, _time_rpn_model, prepared_images, spec, stage


def mask_rcnn_model(setup):
    """A random-weight Mask R-CNN with the setup's model sections and the paper's mask head."""
    from detect.config import from_dict
    from detect.models.registry import build_model

    model = copy.deepcopy(setup.model_config)
    config = from_dict({
        **model,
        "detector": "mask_rcnn",
        "backbone": {**model.get("backbone", {}), "name": setup.backbone, "weights": "none"},
        "input": {"min_size": setup.min_size, "max_size": setup.max_size, "canvas": list(setup.canvas_size)},
    })
    return build_model(config, setup.class_names)


def time_mask_rcnn(setup):
    """Faster R-CNN stage timings of a Mask R-CNN plus its mask head per image."""
    from detect.benchmark.timers import median_seconds

    model = mask_rcnn_model(setup)
    result = _time_rpn_model(setup, model, "mask_rcnn")
    d = model.roi_heads.max_detections
    features = _feature_specs(model, setup.canvas_size)

    @stage([features, spec(1, d, 4), spec(1, d, dtype="int32")], model)
    def mask_head(features, boxes, labels):
        return model.predict_masks(features, {"boxes": boxes, "labels": labels})

    backbone = Stage(model.features, [spec(1, *setup.canvas_size, 3)], model)
    detect = Stage(model.predict_step, None, model)
    ops = keras.ops
    inputs = []
    for batch in prepared_images(setup):
        detections = detect(batch)
        # Boxes back on the canvas: (x, y) times (sx, sy), the scale (sy, sx) reversed.
        canvas = detections["boxes"] * ops.tile(ops.flip(batch["scale"], axis=1), (1, 2))[:, None, :]
        inputs.append((backbone(batch["images"]), canvas, detections["labels"]))
    seconds = median_seconds(mask_head, inputs, setup.warmup, setup.runs)
    result["mask_head"] = seconds
    head = model.mask_head
    result["notes"].append(
        f"mask_rcnn: mask head {seconds * 1000:.1f} ms per image ({d} detections, RoIAlign "
        f"{head.pool_size}x{head.pool_size}, {head.num_convs} conv3x3 of {head.channels}, deconv to "
        f"{head.mask_size}x{head.mask_size}); end-to-end includes it"
    )
    return result
