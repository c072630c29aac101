"""torchvision's COCO detectors as detect model folders: `detect weights convert --from torchvision`.

A torchvision checkpoint (the state_dict that torch.save writes) is read with torch (the
`convert` extra; nothing else in detect needs torch), each tensor is placed in the layer of
the same name in the detector configs/zoo/<arch>.yaml builds (layer names follow
torchvision's module paths, see detect.models.torchvision_backbones), and the folder is
written as `detect train` writes one: model.keras + config.yaml. Every tensor of the
checkpoint must find its layer and every weight of the model must be set, else a one-line
DetectError names the first key that does not fit.

Layout changes on the way: convolution kernels (O, I, kh, kw) -> (kh, kw, I, O), depthwise
(C, 1, kh, kw) -> (kh, kw, C, 1), Linear (O, I) -> (I, O); the first fully connected layer of
the box head reads the pooled RoI flattened channel-first in torch, (y, x)-first in Keras,
so its rows are permuted; the box predictor's background row (torchvision predicts 91 boxes,
detect one per class) is dropped, as is the mask predictor's background channel; the mask
head's ConvTranspose2d (I, O, kh, kw) -> Conv2DTranspose (kh, kw, O, I), unflipped. Labels are COCO category ids (torchvision's 91 outputs:
background and 90 ids, 10 of them unused, named `N/A-<id>`).
"""

import hashlib
import os

import numpy as np

from detect.errors import DetectError

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs",
                          "zoo")

# arch -> (published checkpoint, COCO val2017 box AP as torchvision publishes it).
ARCHS = {
    "fasterrcnn_resnet50_fpn": ("https://download.pytorch.org/models/fasterrcnn_resnet50_fpn_coco-258fb6c6.pth", 37.0),
    "fasterrcnn_resnet50_fpn_v2": (
        "https://download.pytorch.org/models/fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth", 46.7),
    "fasterrcnn_mobilenet_v3_large_fpn": (
        "https://download.pytorch.org/models/fasterrcnn_mobilenet_v3_large_fpn-fb6a3cc7.pth", 32.8),
    # mask AP 34.6 as torchvision publishes it.
    "maskrcnn_resnet50_fpn": ("https://download.pytorch.org/models/maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth", 37.9),
}

# torchvision's COCO category names by id (weights.meta["categories"] without the background).
_COCO_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", None, "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", None, "backpack", "umbrella", None, None, "handbag", "tie", "suitcase",
    "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard",
    "surfboard", "tennis racket", "bottle", None, "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana",
    "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", None, "dining table", None, None, "toilet", None, "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", None, "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
)
COCO_CLASS_NAMES = [name or f"N/A-{i}" for i, name in enumerate(_COCO_NAMES, start=1)]


def config_path(arch):
    _check_arch(arch)
    return os.path.join(CONFIG_DIR, f"{arch}.yaml")


def _check_arch(arch):
    if arch not in ARCHS:
        raise DetectError(f"--arch: unknown torchvision detector {arch!r} (available: {', '.join(ARCHS)})")


# ----------------------------------------------------------------------------- checkpoint
def checkpoint_file(arch, cache_dir=None):
    """The published checkpoint of `arch` in Keras' cache (~/.keras/models), downloaded
    there first if missing, its SHA-256 checked against the prefix in its file name as
    torchvision checks it. Offline: a DetectError saying what to download and where."""
    import keras

    url, _ = ARCHS[arch]
    name = url.rsplit("/", 1)[1]
    cache_dir = cache_dir or os.path.join(os.path.expanduser(os.environ.get("KERAS_HOME", "~/.keras")), "models")
    target = os.path.join(cache_dir, name)
    if not os.path.isfile(target):
        try:
            os.makedirs(cache_dir, exist_ok=True)
            target = os.path.normpath(keras.utils.get_file(fname=name, origin=url, cache_dir=cache_dir,
                                                           cache_subdir="."))
        except Exception as e:  # noqa: BLE001 - any failure to fetch is reported the same way
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DetectError(f"cannot download {url} ({reason}): download it on a machine with a network and put "
                              f"it at {target}, or pass it with --checkpoint FILE.pth") from None
    _check_hash(target, name)
    return target


def _check_hash(path, name):
    stem = os.path.splitext(name)[0]
    prefix = stem.rsplit("-", 1)[-1]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if not digest.hexdigest().startswith(prefix):
        raise DetectError(f"{path}: SHA-256 {digest.hexdigest()[:8]}... does not match {prefix} of {name} "
                          "(a damaged download: delete the file and run again)")


def read_state_dict(path):
    """{key: float32 NumPy array} of a torch.save()d state_dict (or a checkpoint dict
    holding one under "model" / "state_dict")."""
    try:
        import torch
    except ImportError:
        raise DetectError("reading a torchvision checkpoint needs PyTorch: pip install 'detect[convert]' "
                          "(or pip install torch)") from None
    if not os.path.isfile(path):
        raise DetectError(f"--checkpoint: file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise DetectError(f"{path}: not a readable PyTorch checkpoint ({str(e).strip().splitlines()[0]})") from None
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(hasattr(v, "numpy") for v in state.values()):
        raise DetectError(f"{path}: not a state_dict (a mapping of parameter names to tensors)")
    return {k: v.detach().float().numpy() for k, v in state.items() if not k.endswith("num_batches_tracked")}


# ----------------------------------------------------------------------------- mapping
def _conv(w):
    return np.transpose(w, (2, 3, 1, 0))


def _depthwise(w):
    return np.transpose(w, (2, 3, 0, 1))


def _dense(w):
    return np.transpose(w)


def _channel_first_dense(w, size, channels):
    """A Linear on a torch (C, S, S) flatten as a Keras Dense on an (S, S, C) flatten."""
    return w.reshape(w.shape[0], channels, size, size).transpose(2, 3, 1, 0).reshape(size * size * channels, -1)


class _Assigner:
    """Takes checkpoint tensors by key, sets them on Keras layers, and checks both sides."""

    def __init__(self, state, path):
        self.state, self.path = dict(state), path
        self.used = set()
        self.assigned = set()

    def take(self, key):
        if key not in self.state:
            raise DetectError(f"{self.path}: the checkpoint has no `{key}`: not a checkpoint of this architecture")
        self.used.add(key)
        return self.state[key]

    def set(self, layer, values, what):
        expected = [tuple(v.shape) for v in layer.weights]
        got = [tuple(v.shape) for v in values]
        if expected != got:
            raise DetectError(f"{self.path}: `{what}` has shapes {got}, the model's layer {layer.name} {expected}")
        layer.set_weights(values)
        self.assigned.update(id(v) for v in layer.weights)

    def conv(self, layer, prefix, bias=True, depthwise=False):
        kernel = (_depthwise if depthwise else _conv)(self.take(f"{prefix}.weight"))
        values = [kernel] + ([self.take(f"{prefix}.bias")] if bias else [])
        self.set(layer, values, prefix)

    def bn(self, layer, prefix):
        values = [self.take(f"{prefix}.{name}") for name in ("weight", "bias", "running_mean", "running_var")]
        self.set(layer, values, prefix)

    def dense(self, layer, prefix, kernel=None):
        kernel = _dense(self.take(f"{prefix}.weight")) if kernel is None else kernel
        self.set(layer, [kernel, self.take(f"{prefix}.bias")], prefix)

    def finish(self, model):
        unused = sorted(set(self.state) - self.used)
        if unused:
            raise DetectError(f"{self.path}: `{unused[0]}` (and {len(unused) - 1} more) fit no layer of this "
                              "architecture: a checkpoint of another model?")
        missing = [v.path for v in model.weights if id(v) not in self.assigned and "seed" not in v.path]
        if missing:
            raise DetectError(f"internal: the conversion left {missing[0]} unset")


def _torch_module(keras_name):
    """Keras layer name -> torchvision module path (stem_conv1 -> conv1, layer1_0_conv1 ->
    layer1.0.conv1, features_4_block_2 -> 4.block.2)."""
    if keras_name.startswith("stem_"):
        return keras_name[len("stem_"):]
    if keras_name.startswith("features_"):
        return keras_name[len("features_"):].replace("_", ".")
    return keras_name.replace("_", ".")


def _assign_trunk(a, trunk):
    import keras

    from detect.models.torchvision_backbones import FrozenBatchNormalization, SqueezeExcitation

    for layer in trunk.layers:
        if not layer.weights:
            continue
        prefix = "backbone.body." + _torch_module(layer.name)
        if isinstance(layer, FrozenBatchNormalization):
            a.bn(layer, prefix)
        elif isinstance(layer, SqueezeExcitation):
            a.conv(layer.fc1, f"{prefix}.fc1")
            a.conv(layer.fc2, f"{prefix}.fc2")
            a.assigned.update(id(v) for v in layer.weights)
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            a.conv(layer, prefix, bias=False, depthwise=True)
        elif isinstance(layer, keras.layers.Conv2D):
            a.conv(layer, prefix, bias=False)
        else:
            raise DetectError(f"internal: no torchvision weights for trunk layer {layer.name}")


def _assign_fpn(a, fpn):
    bias = fpn.norm == "none"
    for i in range(fpn.num_inputs):
        a.conv(fpn.lateral[i], f"backbone.fpn.inner_blocks.{i}.0", bias=bias)
        a.conv(fpn.output_convs[i], f"backbone.fpn.layer_blocks.{i}.0", bias=bias)
        if not bias:
            a.bn(fpn.lateral_norms[i], f"backbone.fpn.inner_blocks.{i}.1")
            a.bn(fpn.output_norms[i], f"backbone.fpn.layer_blocks.{i}.1")


def _assign_rpn(a, rpn):
    for d, conv in enumerate(rpn.head.convs):
        a.conv(conv, f"rpn.head.conv.{d}.0")
    a.conv(rpn.head.objectness, "rpn.head.cls_logits")
    a.conv(rpn.head.deltas, "rpn.head.bbox_pred")


def _assign_box_head(a, roi_heads, channels):
    import keras

    from detect.models.torchvision_backbones import FrozenBatchNormalization

    head = roi_heads.box_head
    size = roi_heads.pool_size
    first_dense = True
    for layer in head.layers:
        if not layer.weights:
            continue
        if layer.name in ("fc6", "fc7"):  # TwoMLPHead
            prefix = f"roi_heads.box_head.{layer.name}"
        else:  # FastRCNNConvFCHead: box_head_<i>[_<j>]
            prefix = "roi_heads.box_head." + layer.name[len("box_head_"):].replace("_", ".")
        if isinstance(layer, FrozenBatchNormalization):
            a.bn(layer, prefix)
        elif isinstance(layer, keras.layers.Conv2D):
            a.conv(layer, prefix, bias=False)
        elif isinstance(layer, keras.layers.Dense):
            kernel = None
            if first_dense:
                kernel = _channel_first_dense(a.take(f"{prefix}.weight"), size, channels)
                first_dense = False
            a.dense(layer, prefix, kernel)
        else:
            raise DetectError(f"internal: no torchvision weights for box-head layer {layer.name}")
    predictor = roi_heads.predictor
    a.dense(predictor.cls, "roi_heads.box_predictor.cls_score")
    # torchvision predicts a box for the background too (row block 0): detect does not.
    weight, bias = a.take("roi_heads.box_predictor.bbox_pred.weight"), a.take("roi_heads.box_predictor.bbox_pred.bias")
    a.set(predictor.box, [_dense(weight[4:]), bias[4:]], "roi_heads.box_predictor.bbox_pred")


def _transpose_conv(w):
    """ConvTranspose2d (I, O, kh, kw) -> Keras Conv2DTranspose (kh, kw, O, I); no spatial
    flip (both are the gradient of a correlation; checked against torch numerically)."""
    return np.transpose(w, (2, 3, 1, 0))


def _assign_mask_head(a, head):
    for i, conv in enumerate(head.convs):
        a.conv(conv, f"roi_heads.mask_head.{i}.0")
    prefix = "roi_heads.mask_predictor.conv5_mask"
    a.set(head.deconv, [_transpose_conv(a.take(f"{prefix}.weight")), a.take(f"{prefix}.bias")], prefix)
    # torchvision predicts a background mask too (channel 0): detect does not.
    prefix = "roi_heads.mask_predictor.mask_fcn_logits"
    weight, bias = a.take(f"{prefix}.weight"), a.take(f"{prefix}.bias")
    a.set(head.predictor, [_conv(weight[1:]), bias[1:]], prefix)


def assign_weights(model, state, path="checkpoint"):
    """Set every weight of a detector built from configs/zoo/<arch>.yaml from a torchvision
    state_dict ({key: NumPy array}); DetectError when the two do not fit one to one."""
    a = _Assigner(state, path)
    _assign_trunk(a, model.backbone)
    _assign_fpn(a, model.neck)
    _assign_rpn(a, model.rpn)
    _assign_box_head(a, model.roi_heads, model.neck.channels)
    if getattr(model, "mask_head", None) is not None:
        _assign_mask_head(a, model.mask_head)
    a.finish(model)


# ----------------------------------------------------------------------------- the command
def build_zoo_model(arch, overrides=()):
    """(model with random weights, resolved config) of configs/zoo/<arch>.yaml, COCO classes."""
    from detect.config import load_config
    from detect.models.registry import build_model

    config = load_config(config_path(arch), list(overrides))
    return build_model(config, COCO_CLASS_NAMES), config


def convert(arch, out_dir, checkpoint=None, overwrite=False):
    """Write the model folder of torchvision's `arch` to `out_dir` (model.keras, config.yaml);
    `checkpoint`: a local state_dict file, else the published one (downloaded once)."""
    from detect.config import dump_config
    from detect.io import atomic_path

    _check_arch(arch)
    if os.path.exists(os.path.join(out_dir, "model.keras")) and not overwrite:
        raise DetectError(f"{out_dir} already holds a model (model.keras): pass --overwrite to replace it")
    path = checkpoint or checkpoint_file(arch)
    state = read_state_dict(path)
    model, config = build_zoo_model(arch)
    assign_weights(model, state, path)
    config["dataset"]["class_names"] = list(COCO_CLASS_NAMES)
    os.makedirs(out_dir, exist_ok=True)
    with atomic_path(os.path.join(out_dir, "model.keras")) as tmp:
        model.save(tmp)
    dump_config(config, os.path.join(out_dir, "config.yaml"))
    return out_dir
