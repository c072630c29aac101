"""Backbones at stride 16 and their per-RoI heads.

Every backbone is a pair of Keras models built by `build_backbone`:

- `trunk`: images (N, H, W, 3) float32 RGB in [0, 255] -> features (N, H/16, W/16, C);
  pixel normalization is the trunk's first layer, so callers feed raw pixels.
- `roi_head`: pooled RoI features (R, S, S, C) -> one vector per RoI (R, D). VGG16 and
  `tiny` use fc6/fc7 (two fully connected layers, as in Fast R-CNN); ResNets use conv5_x
  (res5) followed by global average pooling, as in the ResNet paper's Faster R-CNN, fed
  with RoIs pooled at twice the output size (`roi_pool_size` says which size).

`weights`: "none" (random init), "imagenet" (keras.applications' files through Keras' own
download and cache, see detect.models.pretrained; VGG16's fc6/fc7 start from ImageNet
fc1/fc2 of the include_top file, as in the Fast R-CNN paper) or a path to a `.weights.h5`
file for the trunk.
"""

import os

import keras

from detect.errors import DetectError
from detect.models.blocks import PixelNormalization, fc_head  # noqa: F401 - re-exported
from detect.models.pretrained import imagenet_weights_path, load_dense_from_h5

# (keras.applications constructor name, stride-16 layer, res5 last layer)
_APPLICATIONS = {
    "vgg16": ("VGG16", "block5_conv3", None),
    "resnet50": ("ResNet50", "conv4_block6_out", "conv5_block3_out"),
    "resnet101": ("ResNet101", "conv4_block23_out", "conv5_block3_out"),
}

# ResNet stage outputs C2..C5 (strides 4..32) for the FPN variants `<name>_fpn`.
_STAGES = {
    "resnet50": ("conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out"),
    "resnet101": ("conv2_block3_out", "conv3_block4_out", "conv4_block23_out", "conv5_block3_out"),
}
FPN_BACKBONES = ("tiny_fpn", "resnet50_fpn", "resnet101_fpn")
FPN_STRIDES = (4, 8, 16, 32, 64)  # P2..P6

# Fast R-CNN: dropout 0.5 after fc6 and fc7 of VGG16 (as in its ImageNet training).
_DEFAULT_HEAD_DROPOUT = {"vgg16": 0.5}

# Caffe-style normalization used by keras.applications VGG16 / ResNet (BGR, mean only).
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def _tiny_trunk(width, stages=False):
    """4 x [3x3 conv + BatchNorm + ReLU + 2x2 max-pool]: stride 16, 8*width channels.

    stages=True (`tiny_fpn`): a fifth block (8*width channels, stride 32) and the outputs
    [C2, C3, C4, C5] of blocks 2..5 (strides 4..32, 2/4/8/8 x width channels).
    """
    inputs = keras.Input((None, None, 3), name="images")
    x = PixelNormalization((127.5, 127.5, 127.5), (63.75, 63.75, 63.75), name="normalize")(inputs)
    outputs = []
    for i in range(5 if stages else 4):
        channels = width * 2 ** min(i, 3)
        x = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False, name=f"conv{i + 1}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i + 1}")(x)
        x = keras.layers.ReLU(name=f"relu{i + 1}")(x)
        x = keras.layers.MaxPool2D(2, name=f"pool{i + 1}")(x)
        outputs.append(x)
    if stages:
        return keras.Model(inputs, outputs[1:], name="tiny_fpn_trunk")
    return keras.Model(inputs, x, name="tiny_trunk")


def _application(name, weights):
    constructor = getattr(keras.applications, _APPLICATIONS[name][0])
    model = constructor(include_top=False, weights=None, input_shape=(None, None, 3))
    if weights == "imagenet":
        model.load_weights(imagenet_weights_path(name))
    return model


def _vgg16_head(roi_size, channels, head_dim, weights, svd_ranks, dropout):
    """fc6/fc7 for VGG16; with ImageNet weights they start from fc1/fc2 (7x7x512 -> 4096)."""
    head = fc_head((roi_size, roi_size, channels), head_dim, svd_ranks=svd_ranks, dropout=dropout)
    if weights != "imagenet":
        return head
    if svd_ranks is not None or roi_size != 7 or head_dim != 4096:
        raise DetectError(
            "backbone.weights: imagenet initializes fc6/fc7 from VGG16's fc1/fc2, which needs roi size 7, "
            f"head_dim 4096 and no SVD (got roi size {roi_size}, head_dim {head_dim}, svd {svd_ranks})"
        )
    load_dense_from_h5(head, imagenet_weights_path("vgg16", include_top=True), {"fc6": "fc1", "fc7": "fc2"})
    return head


def _freeze_batchnorm(model):
    # Detection batches are too small for batch statistics: BN is a fixed affine map.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def _resnet_stages(name, weights):
    """ResNet trunk images -> [C2, C3, C4, C5], conv1-2 and BatchNorm frozen (detectron2's
    FREEZE_AT=2 with frozen BN)."""
    app = _application(name, weights)
    _freeze_batchnorm(app)
    for layer in app.layers:
        if layer.name.startswith(("conv1_", "conv2_")):
            layer.trainable = False
    inputs = keras.Input((None, None, 3), name="images")
    x = PixelNormalization(_CAFFE_MEAN_BGR, (1.0, 1.0, 1.0), bgr=True, name="normalize")(inputs)
    stages = keras.Model(app.input, [app.get_layer(layer).output for layer in _STAGES[name]])(x)
    return keras.Model(inputs, stages, name=f"{name}_fpn_trunk")


def build_fpn_backbone(name, weights="none", roi_size=7, head_dim=1024, width=32, fpn_channels=256,
                       head_svd_ranks=None, head_dropout=None):
    """(trunk images -> [C2..C5], 2-fc box head on (roi_size, roi_size, fpn_channels), info)
    for `tiny_fpn`, `resnet50_fpn`, `resnet101_fpn`; the FPN neck itself is
    detect.models.fpn.FeaturePyramid. info: channels (fpn_channels), strides (P2..P6),
    roi_pool_size, fpn=True."""
    base = name[: -len("_fpn")]
    if base == "tiny":
        if weights == "imagenet":
            raise DetectError("backbone.weights: the tiny backbone has no ImageNet weights")
        trunk = _tiny_trunk(width, stages=True)
    else:
        trunk = _resnet_stages(base, weights)
    dropout = 0.0 if head_dropout is None else float(head_dropout)
    roi_head = fc_head((roi_size, roi_size, fpn_channels), head_dim, svd_ranks=head_svd_ranks, dropout=dropout)
    if weights not in ("none", "imagenet"):
        try:
            trunk.load_weights(weights)
        except Exception as e:  # noqa: BLE001 - any load failure is the user's file
            raise DetectError(f"backbone.weights: cannot load {weights}: {e}") from None
    info = {"channels": int(fpn_channels), "stride": FPN_STRIDES[0], "strides": FPN_STRIDES,
            "roi_pool_size": roi_size, "fpn": True}
    return trunk, roi_head, info


def _application_backbone(name, weights, roi_size, head_dim, svd_ranks, dropout):
    """keras.applications VGG16 / ResNet: (trunk to stride 16, box head, channels, RoI
    pool size). VGG16 keeps conv1-2 frozen (Fast R-CNN paper) and pairs with fc6/fc7;
    ResNets keep conv1-2 and BatchNorm frozen and pair with res5 fed 2S x 2S RoIs."""
    app = _application(name, weights)
    _, out_layer, res5_out = _APPLICATIONS[name]
    inputs = keras.Input((None, None, 3), name="images")
    x = PixelNormalization(_CAFFE_MEAN_BGR, (1.0, 1.0, 1.0), bgr=True, name="normalize")(inputs)
    features = keras.Model(app.input, app.get_layer(out_layer).output)(x)
    trunk = keras.Model(inputs, features, name=f"{name}_trunk")
    channels = features.shape[-1]
    if name == "vgg16":
        for layer in app.layers:
            if layer.name.startswith(("block1_", "block2_")):
                layer.trainable = False
        return trunk, _vgg16_head(roi_size, channels, head_dim, weights, svd_ranks, dropout), channels, roi_size
    _freeze_batchnorm(app)
    for layer in app.layers:
        if layer.name.startswith(("conv1_", "conv2_")):
            layer.trainable = False
    res5 = keras.Model(app.get_layer(out_layer).output, app.get_layer(res5_out).output)
    roi_inputs = keras.Input((2 * roi_size, 2 * roi_size, channels), name="roi_features")
    y = keras.layers.GlobalAveragePooling2D(name="res5_pool")(res5(roi_inputs))
    return trunk, keras.Model(roi_inputs, y, name="res5_head"), channels, 2 * roi_size


def build_backbone(
    name, weights="none", roi_size=7, head_dim=4096, width=32, head_svd_ranks=None, head_dropout=None,
    fpn_channels=256, head_convs=0, head_fcs=2,
):
    """Build (trunk, roi_head, info) for a backbone name.

    Args:
      name: tiny | vgg16 | resnet50 | resnet101.
      weights: none | imagenet | path to a trunk `.weights.h5` file.
      roi_size: S, the RoI output size the head receives is (roi_pool_size, roi_pool_size).
      head_dim: fc6/fc7 width for fc heads.
      width: first-block channels of the tiny trunk.
      head_svd_ranks: (r6, r7) to build fc6/fc7 factorized (see fc_head); fc heads only.
      head_dropout: dropout rate after fc6 and fc7 (fc heads); None = 0.5 for vgg16 as in
        the paper, 0 for tiny.
      fpn_channels: channels of the FPN levels (the `*_fpn` backbones, see build_fpn_backbone).
      head_convs, head_fcs: the torchvision_* backbones' box head (conv layers, then fc
        layers; see detect.models.torchvision_backbones).
    Returns:
      trunk, roi_head, info dict with `channels` (C), `stride` (16), `roi_pool_size`.
    """
    if name.startswith("torchvision_"):
        from detect.models.torchvision_backbones import build_torchvision_backbone

        return build_torchvision_backbone(name, weights, roi_size, head_dim, fpn_channels, head_convs, head_fcs,
                                          head_svd_ranks)
    if weights not in ("none", "imagenet") and not os.path.isfile(str(weights)):
        raise DetectError(f"backbone.weights: file not found: {weights}")
    if name in FPN_BACKBONES:
        return build_fpn_backbone(name, weights, roi_size, head_dim, width, fpn_channels, head_svd_ranks,
                                  head_dropout)
    if head_svd_ranks is not None and name not in ("tiny", "vgg16") + FPN_BACKBONES:
        raise DetectError(f"head SVD ranks apply to fc6/fc7 heads (tiny, vgg16, *_fpn); {name} has a res5 head")
    dropout = _DEFAULT_HEAD_DROPOUT.get(name, 0.0) if head_dropout is None else float(head_dropout)
    if name == "tiny":
        if weights == "imagenet":
            raise DetectError("backbone.weights: the tiny backbone has no ImageNet weights")
        trunk = _tiny_trunk(width)
        channels = width * 8
        roi_head = fc_head((roi_size, roi_size, channels), head_dim, svd_ranks=head_svd_ranks, dropout=dropout)
        pool_size = roi_size
    elif name in _APPLICATIONS:
        trunk, roi_head, channels, pool_size = _application_backbone(
            name, weights, roi_size, head_dim, head_svd_ranks, dropout
        )
    else:
        raise DetectError(
            f"backbone.name: unknown backbone {name!r} (tiny, vgg16, resnet50, resnet101, {', '.join(FPN_BACKBONES)})"
        )
    if weights not in ("none", "imagenet"):
        try:
            trunk.load_weights(weights)
        except Exception as e:  # noqa: BLE001 - any load failure is the user's file
            raise DetectError(f"backbone.weights: cannot load {weights}: {e}") from None
    return trunk, roi_head, {"channels": int(channels), "stride": 16, "roi_pool_size": pool_size}


# Layers build_backbone freezes in keras.applications backbones: VGG16 conv1-2 (Fast R-CNN
# paper), ResNet conv1-2 and every BatchNorm (`*_bn`). The tiny backbone's BatchNorm
# (`bn1`..`bn4`) trains from scratch and is not matched.
_FIXED_PREFIXES = ("block1_", "block2_", "conv1_", "conv2_")
# torchvision_* backbones (torchvision_backbones.py): ResNet's stem and layer1, MobileNetV3's
# features 0..6; their BatchNorm layers are FrozenBatchNormalization, never trainable.
_TORCHVISION_FIXED = ("stem_", "layer1_") + tuple(f"features_{i}_" for i in range(7))


def freeze_fixed_layers(model):
    """Re-apply the build-time freezing inside `model` (a trunk or box head), e.g. after
    `model.trainable = True`, which Keras propagates to every sublayer."""
    from detect.models.torchvision_backbones import FrozenBatchNormalization

    torchvision = any(isinstance(layer, FrozenBatchNormalization) for layer in _all_layers(model))
    prefixes = _FIXED_PREFIXES + (_TORCHVISION_FIXED if torchvision else ())
    for layer in _all_layers(model):
        bn = isinstance(layer, keras.layers.BatchNormalization) and layer.name.endswith("_bn")
        if bn or isinstance(layer, FrozenBatchNormalization) or layer.name.startswith(prefixes):
            layer.trainable = False


def _all_layers(model):
    for layer in getattr(model, "layers", ()):
        yield layer
        yield from _all_layers(layer)
