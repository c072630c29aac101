"""Truncated SVD of the fc6/fc7 head, as in the Fast R-CNN paper (section 3.1).

A Dense layer y = act(x W + b) with kernel W (in, out) is replaced by two layers:
x -> x (U_r S_r) (in -> r, linear, no bias) -> act(. V_r^T + b) (r -> out), where
W = U S V^T and U_r S_r V_r^T keeps the r largest singular values. That is the best rank-r
approximation: its Frobenius error is sqrt(sum of the dropped singular values squared).
Parameters fall from in * out to r * (in + out): for VGG16 with ranks (1024, 256), fc6
(25088 x 4096) and fc7 (4096 x 4096) go from 119.5M to 32.0M weights.
"""

import logging

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


def _has_fc_head(model):
    names = {layer.name for layer in model.roi_head.layers}
    return all(name in names for name in FC_LAYERS)


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


def _copy_all_but_fc(source, target):
    """Copy every weight except fc6/fc7 kernels (and their factors); returns the count."""
    skip = set(FC_LAYERS) | {f"{name}_svd" for name in FC_LAYERS}
    copied = 0
    for layer in source.layers:
        if layer is source.roi_head:
            copied += _copy_layer_weights(layer, target.roi_head, skip=skip)
        elif layer.weights:
            target.get_layer(layer.name).set_weights(layer.get_weights())
            copied += len(layer.weights)
    return copied


def truncate_head(model, ranks=(1024, 256)):
    """A copy of a two-stage detector whose fc6/fc7 are replaced by truncated SVDs.

    Every other weight (trunk, RPN, box predictor, fc biases) is copied unchanged. The new
    model is built from `model.get_config()` plus `head_svd_ranks`, so it saves and loads
    as `.keras` like the original. Ranks are clipped to min(in, out) of each layer; a
    model that is already factorized is re-factorized from its multiplied-out kernels.

    Args:
      model: a FasterRCNN (or subclass) with a fc6/fc7 head (tiny, vgg16 backbones).
      ranks: (r6, r7) ranks for fc6 and fc7.
    Returns:
      the new model (uncompiled).
    """
    if not _has_fc_head(model):
        raise DetectError(f"truncated SVD needs a fc6/fc7 head; the {model.backbone_name} backbone has a res5 head")
    ranks = _check_ranks(ranks)
    head = model.roi_head
    kernels = {name: _full_kernel(head, name) for name in FC_LAYERS}
    clipped = [min(rank, *kernels[name].shape) for name, rank in zip(FC_LAYERS, ranks)]
    for name, rank in zip(FC_LAYERS, clipped):
        shape = kernels[name].shape
        if rank * (shape[0] + shape[1]) >= shape[0] * shape[1]:
            logger.warning("%s rank %d of a %d x %d kernel: the factorized layer is not smaller", name, rank, *shape)

    new = type(model).from_config({**model.get_config(), "head_svd_ranks": clipped})
    copied = _copy_all_but_fc(model, new)
    for name, rank in zip(FC_LAYERS, clipped):
        first, second = factorize(kernels[name], rank)
        new.roi_head.get_layer(f"{name}_svd").kernel.assign(first)
        new.roi_head.get_layer(name).kernel.assign(second)
        new.roi_head.get_layer(name).bias.assign(head.get_layer(name).bias.numpy())
        copied += 3
    # A weight outside model.layers would otherwise keep its random initialization.
    if copied != len(new.weights):
        raise RuntimeError(f"truncate_head set {copied} of {len(new.weights)} weights of the new model")
    return new
