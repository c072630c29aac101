"""The ops of detect/ops on fixed inputs, run under whichever Keras backend the process
has: `KERAS_BACKEND=jax python tests/ops/backend_cases.py OUT.npz` writes every case's
outputs, which tests/ops/test_dispatch.py compares with TensorFlow's in its own process.

Inputs are NumPy arrays made from fixed seeds, so every backend sees the same numbers.
"""

import sys

import numpy as np


def _boxes(rng, n, span=100.0):
    corners = rng.uniform(0, span, size=(n, 2)).astype("float32")
    sizes = rng.uniform(1, span / 2, size=(n, 2)).astype("float32")
    return np.concatenate([corners, corners + sizes], axis=1)


def cases():
    """{name: function returning a dict of arrays}; each runs on the current backend."""
    from keras import ops

    from detect.ops import anchors, box_coder, boxes, matching, multilevel, nms, roi_pool

    rng = np.random.default_rng(0)
    a, b = _boxes(rng, 7), _boxes(rng, 5)
    batch_boxes = np.stack([_boxes(rng, 60), _boxes(rng, 60)])
    batch_scores = rng.uniform(size=(2, 60)).astype("float32")
    batch_scores[0, :4] = 0.5  # ties: the lower index goes first
    features = rng.normal(size=(2, 12, 16, 3)).astype("float32")
    rois = np.stack([_boxes(rng, 9, span=180.0), _boxes(rng, 9, span=180.0)])
    pyramid = [rng.normal(size=(2, 64 // s, 64 // s, 4)).astype("float32") for s in (4, 8, 16, 32)]
    coder = box_coder.BoxCoder((10.0, 10.0, 5.0, 5.0))

    def numpy(value):
        return {k: ops.convert_to_numpy(v) for k, v in value.items()}

    return {
        "iou": lambda: numpy({"iou": boxes.pairwise_iou(a, b), "clip": boxes.clip_boxes(a, 40.0, 60.0)}),
        "coder": lambda: numpy({"decoded": coder.decode(coder.encode(a, a[::-1]), a[::-1])}),
        "anchors": lambda: numpy({"grid": anchors.grid_anchors(3, 4, 16, (32, 64), (0.5, 1.0, 2.0))}),
        "matcher": lambda: dict(zip(("matched", "labels"), (
            ops.convert_to_numpy(x) for x in matching.Matcher(0.5, 0.3)(boxes.pairwise_iou(b, a))))),
        "nms": lambda: dict(zip(("indices", "valid"), (
            ops.convert_to_numpy(x) for x in nms.nms_padded(batch_boxes, batch_scores, 20, 0.5, 0.1)))),
        "multiclass": lambda: numpy(nms.multiclass_nms(
            np.repeat(batch_boxes[:, :, None], 3, axis=2), np.repeat(batch_scores[..., None], 3, axis=2) * [1, .9, .8],
            25, 0.5, 0.2)),
        "roi_align": lambda: numpy({"pooled": roi_pool.RoIAlign(4, 1 / 8, 2)(features, rois)}),
        "roi_pool": lambda: numpy({"pooled": roi_pool.RoIPool(3, 1 / 8)(features, rois)}),
        "multilevel": lambda: numpy({"pooled": multilevel.MultiLevelRoIAlign(3, (4, 8, 16, 32), 2, 56.0)(
            pyramid, rois / 3.0)}),
    }


def main(out):
    np.savez(out, **{f"{name}/{key}": value for name, case in cases().items() for key, value in case().items()})


if __name__ == "__main__":
    main(sys.argv[1])
