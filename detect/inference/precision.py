"""Inference precision: float32, or bf16 through Keras' mixed_bfloat16 policy.

`apply_precision(model, "bf16")` switches a built (or loaded) detector in place: its
convolutions and dense layers compute in bfloat16 with float32 weights (Keras'
mixed_bfloat16: variables stay float32 and are cast when read), while everything that
handles boxes and scores stays float32:

  - the detector itself, the RPN, the RoI heads and Mask R-CNN's mask head (so proposals, RoIs, `scale` and
    Fast R-CNN's input proposals are never rounded to bfloat16, whose 8-bit mantissa
    spaces 600-pixel coordinates 4 pixels apart), and the RoI pooling layers (their
    input features are cast back to float32, which crop_and_resize needs anyway);
  - the output layers: the RPN's objectness and delta convolutions, the box predictor
    (class logits and box deltas), the mask logits and R-CNN's classifier, SVM and box
    regressor;
  - anchor generation, box decoding, clipping, NMS and softmax (they run in the float32
    containers above).

Weights are never copied: mixed_bfloat16 keeps float32 variables, so switching the
compute dtype of a built layer is enough. On CPUs with AVX512_BF16 (AMD Zen 4/5, Intel
Cooper Lake) or AMX (Intel Sapphire Rapids and later) oneDNN runs bfloat16 convolutions
and matmuls natively; elsewhere they are emulated and slower than float32, which
`bf16_support` lets callers say.
"""

import logging

import keras

from detect import compat
from detect.errors import DetectError

logger = logging.getLogger(__name__)

PRECISIONS = ("float32", "bf16")
POLICIES = {"float32": "float32", "bf16": "mixed_bfloat16"}
# CPU flags (/proc/cpuinfo) with native bfloat16 arithmetic for oneDNN.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def check_precision(precision):
    """The precision name, or a one-line DetectError naming the allowed values."""
    if precision not in PRECISIONS:
        raise DetectError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    return precision


def bf16_support(flags=None):
    """The CPU flags giving native bfloat16 (e.g. ["avx512_bf16"]); [] where it is emulated."""
    from detect.runtime import cpu_flags

    flags = cpu_flags() if flags is None else flags
    return [flag for flag in BF16_FLAGS if flag in flags]


def _float32_subtrees(model):
    """Layers that stay float32 with everything under them: the output layers."""
    from detect.models.mask_head import MaskHead
    from detect.models.roi_heads import BoxPredictor
    from detect.models.rpn import RPNHead

    kept = []
    for layer in _walk(model):
        if isinstance(layer, BoxPredictor):
            kept.append(layer)
        elif isinstance(layer, RPNHead):
            kept += [layer.objectness, layer.deltas]
        elif isinstance(layer, MaskHead):
            kept.append(layer.predictor)
    kept += [getattr(model, name) for name in ("classifier", "svm", "box_regressor") if hasattr(model, name)]
    return kept


def _float32_containers():
    """Layer classes that stay float32 themselves (their sub-layers are decided one by one):
    they take and return boxes, so their inputs must not be cast to bfloat16."""
    from detect.models.mask_head import MaskHead
    from detect.models.roi_heads import RoIHeads
    from detect.models.rpn import RegionProposalNetwork
    from detect.ops.multilevel import MultiLevelRoIAlign
    from detect.ops.roi_pool import RoIAlign, RoIPool

    return (RegionProposalNetwork, RoIHeads, MaskHead, RoIAlign, RoIPool, MultiLevelRoIAlign)


def _walk(layer, seen=None):
    """`layer` and every layer under it, each once, parents first."""
    seen = set() if seen is None else seen
    if id(layer) in seen:
        return
    seen.add(id(layer))
    yield layer
    for child in compat.sublayers(layer):
        yield from _walk(child, seen)


def apply_precision(model, precision):
    """Set every layer of `model` to `precision`'s dtype policy, in place; returns `model`.

    float32 sets every layer back to float32. bf16 leaves the model itself, the
    box-handling parts and the output layers float32 (module docstring); a warning says so
    when this CPU has no native bfloat16 (it then runs slower than float32).
    """
    check_precision(precision)
    if precision == "bf16" and not bf16_support():
        logger.warning("this CPU has no AVX512_BF16 or AMX: bfloat16 is emulated and slower than float32")
    mixed = keras.DTypePolicy(POLICIES[precision])
    full = keras.DTypePolicy("float32")
    keep = {id(layer) for top in _float32_subtrees(model) for layer in _walk(top)}
    containers = _float32_containers()
    for layer in _walk(model):
        if layer is model or id(layer) in keep or isinstance(layer, containers):
            layer.dtype_policy = full
        else:
            layer.dtype_policy = mixed
    model.inference_precision = precision
    return model


def precision_of(model):
    """The precision `apply_precision` last set on `model` ("float32" when never)."""
    return getattr(model, "inference_precision", "float32")
