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


def _gradient(fn, x):
    """d sum(fn(x) * w) / dx for a fixed w, on the running backend (the RoIAlign backward)."""
    import keras

    backend = keras.backend.backend()
    weights = np.random.default_rng(9).normal(size=fn(x).shape).astype("float32")
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(fn(x) * weights)
        return tape.gradient(loss, x).numpy()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(lambda v: (fn(v) * weights).sum())(x))
    import torch

    x = torch.tensor(x, requires_grad=True)
    (fn(x) * torch.tensor(weights)).sum().backward()
    return x.grad.numpy()


def _hard_nms_inputs(rng):
    """Boxes with flipped corners, zero area, exact duplicates at equal scores, -inf scores."""
    boxes = np.stack([_boxes(rng, 80, span=60.0), _boxes(rng, 80, span=60.0)])
    boxes[0, 10:20] = boxes[0, 10:20][:, [2, 3, 0, 1]]  # x2 < x1 and y2 < y1: the same boxes
    boxes[0, 20:25, 2:] = boxes[0, 20:25, :2]  # zero area
    boxes[1, 30:40] = boxes[1, 20]  # ten copies of one box
    scores = (rng.integers(0, 8, size=(2, 80)) / 8.0).astype("float32")  # many ties
    scores[1, 30:40] = 0.75
    scores[1, 50:60] = -np.inf
    return boxes, scores


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
    hard_nms = _hard_nms_inputs(rng)

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
        "nms_hard": lambda: dict(zip(("indices", "valid", "few", "few_valid"), (
            ops.convert_to_numpy(x) for x in nms.nms_padded(*hard_nms, 70, 0.4, 0.1)
            + nms.nms_padded(*hard_nms, 3, 0.4, float("-inf"))))),
        "roi_align": lambda: numpy({"pooled": roi_pool.RoIAlign(4, 1 / 8, 2)(features, rois)}),
        "roi_align_unaligned": lambda: numpy({"pooled": roi_pool.RoIAlign(3, 1 / 4, 2, aligned=False)(
            features, rois / 2.0)}),
        "roi_align_grad": lambda: {"features": _gradient(lambda f: roi_pool.RoIAlign(4, 1 / 8, 2)(f, rois), features)},
        "multilevel_grad": lambda: {"p3": _gradient(lambda f: multilevel.MultiLevelRoIAlign(3, (4, 8, 16, 32), 2, 56.0)(
            [pyramid[0], f, pyramid[2], pyramid[3]], rois / 3.0), pyramid[1])},
        "roi_pool": lambda: numpy({"pooled": roi_pool.RoIPool(3, 1 / 8)(features, rois)}),
        "multilevel": lambda: numpy({"pooled": multilevel.MultiLevelRoIAlign(3, (4, 8, 16, 32), 2, 56.0)(
            pyramid, rois / 3.0)}),
    }


def main(out):
    from detect.ops import dispatch

    outputs = {f"{name}/{key}": value for name, case in cases().items() for key, value in case().items()}
    # Which kernels this process ran: torchvision's or the keras.ops forms (not compared).
    outputs["_kernels/torchvision"] = np.array(dispatch.torchvision_ops() is not None)
    np.savez(out, **outputs)


if __name__ == "__main__":
    main(sys.argv[1])
