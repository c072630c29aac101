"""Truncated SVD of the fc6/fc7 head, as in the Fast R-CNN paper (section 3.1).

A Dense layer y = act(x W + b) with kernel W (in, out) is replaced by two layers:
x -> x (U_r S_r) (in -> r, linear, no bias) -> act(. V_r^T + b) (r -> out), where
W = U S V^T and U_r S_r V_r^T keeps the r largest singular values. That is the best rank-r
approximation: its Frobenius error is sqrt(sum of the dropped singular values squared).
Parameters fall from in * out to r * (in + out): for VGG16 with ranks (1024, 256), fc6
(25088 x 4096) and fc7 (4096 x 4096) go from 119.5M to 32.0M weights.
"""

import logging

import keras
import numpy as np

from detect.errors import DetectError

logger = logging.getLogger(__name__)

FC_LAYERS = ("fc6", "fc7")


def parse_ranks(text):
    """"1024,256" -> (1024, 256): the fc6 and fc7 ranks, positive integers."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        ranks = tuple(int(p) for p in parts)
    except ValueError:
        ranks = ()
    if len(ranks) != 2 or min(ranks) < 1:
        raise DetectError(f"--svd {text!r}: expected two positive integers (fc6 and fc7 ranks), e.g. 1024,256")
    return ranks


def factorize(kernel, rank):
    """Best rank-r factorization of a Dense kernel.

    Args:
      kernel: (in, out) array W of `x @ W`.
      rank: r, at most min(in, out).
    Returns:
      first (in, r) = U_r S_r and second (r, out) = V_r^T, so first @ second ~= W.
    """
    kernel = np.asarray(kernel)
    if not 1 <= rank <= min(kernel.shape):
        raise DetectError(f"SVD rank {rank} is outside 1..{min(kernel.shape)} for a {kernel.shape} kernel")
    u, s, vt = np.linalg.svd(kernel, full_matrices=False)
    return (u[:, :rank] * s[:rank]).astype(kernel.dtype), vt[:rank].astype(kernel.dtype)


def _has_fc_head(head):
    names = {layer.name for layer in getattr(head, "layers", ())}
    return all(name in names for name in FC_LAYERS)


def head_ranks(head):
    """(r6, r7) of a factorized fc6/fc7 box head, None when it is not factorized."""
    names = {layer.name for layer in getattr(head, "layers", ())}
    if not all(f"{name}_svd" in names for name in FC_LAYERS):
        return None
    return tuple(int(head.get_layer(f"{name}_svd").units) for name in FC_LAYERS)


def _full_kernel(head, name):
    """(in, out) kernel of fc6/fc7, multiplied out when the layer is already factorized."""
    kernel = head.get_layer(name).kernel.numpy()
    names = {layer.name for layer in head.layers}
    if f"{name}_svd" in names:
        kernel = head.get_layer(f"{name}_svd").kernel.numpy() @ kernel
    return kernel


def _check_ranks(ranks):
    try:
        ranks = tuple(int(r) for r in ranks)
    except (TypeError, ValueError):
        ranks = ()
    if len(ranks) != 2 or min(ranks) < 1:
        raise DetectError(f"SVD ranks {ranks!r}: expected two positive integers (fc6, fc7), e.g. (1024, 256)")
    return ranks


def _copy_layer_weights(source, target, skip=()):
    """Copy weights between same-named sublayers of two models; returns the count copied."""
    copied = 0
    for layer in source.layers:
        if layer.name in skip or not layer.weights:
            continue
        target.get_layer(layer.name).set_weights(layer.get_weights())
        copied += len(layer.weights)
    return copied


def _factorized_head(head, ranks):
    """A new fc6/fc7 box head like `head` (input shape, width, dropout) with SVD ranks."""
    from detect.models.backbones import fc_head

    dropout = [layer.rate for layer in head.layers if isinstance(layer, keras.layers.Dropout)]
    return fc_head(tuple(head.input_shape[1:]), int(head.get_layer("fc6").units), name=head.name,
                   svd_ranks=ranks, dropout=dropout[0] if dropout else 0.0)


def truncate_head(model, ranks=(1024, 256)):
    """A copy of a two-stage detector whose fc6/fc7 are replaced by truncated SVDs.

    Every other weight (backbone, RPN, box predictor, fc biases) is copied unchanged. The
    new model is built from `model.get_config()` with the factorized box head, so it saves
    and loads as `.keras` like the original. Ranks are clipped to min(in, out) of each
    layer; a model that is already factorized is re-factorized from its multiplied-out
    kernels.

    Args:
      model: a TwoStageDetector with a fc6/fc7 box head (tiny, vgg16 backbones).
      ranks: (r6, r7) ranks for fc6 and fc7.
    Returns:
      the new model (uncompiled).
    """
    head = model.roi_heads.box_head
    if not _has_fc_head(head):
        raise DetectError(f"truncated SVD needs a fc6/fc7 head; this model's box head is `{head.name}`")
    ranks = _check_ranks(ranks)
    kernels = {name: _full_kernel(head, name) for name in FC_LAYERS}
    clipped = [min(rank, *kernels[name].shape) for name, rank in zip(FC_LAYERS, ranks)]
    for name, rank in zip(FC_LAYERS, clipped):
        shape = kernels[name].shape
        if rank * (shape[0] + shape[1]) >= shape[0] * shape[1]:
            logger.warning("%s rank %d of a %d x %d kernel: the factorized layer is not smaller", name, rank, *shape)

    config = model.get_config()
    config["roi_heads"]["config"]["box_head"] = keras.saving.serialize_keras_object(_factorized_head(head, clipped))
    new = type(model).from_config(config)
    new.backbone.set_weights(model.backbone.get_weights())
    if model.rpn is not None:
        new.rpn.set_weights(model.rpn.get_weights())
    new.roi_heads.predictor.set_weights(model.roi_heads.predictor.get_weights())
    new_head = new.roi_heads.box_head
    skip = set(FC_LAYERS) | {f"{name}_svd" for name in FC_LAYERS}
    _copy_layer_weights(head, new_head, skip=skip)
    for name, rank in zip(FC_LAYERS, clipped):
        first, second = factorize(kernels[name], rank)
        new_head.get_layer(f"{name}_svd").kernel.assign(first)
        new_head.get_layer(name).kernel.assign(second)
        new_head.get_layer(name).bias.assign(head.get_layer(name).bias.numpy())
    return new
