"""Backbones and box heads built as torchvision builds them, so its COCO checkpoints load
exactly (detect weights convert, detect/zoo/torchvision.py).

- `torchvision_resnet50_fpn`: torchvision's ResNet-50 (the stride in the 3x3 conv of each
  first bottleneck, convolutions without bias, torch's symmetric padding: one pixel on
  every side of a 3x3 conv, three of the 7x7 stem) with BatchNorm as a fixed affine map
  (FrozenBatchNorm2d, eps 1e-5), ImageNet mean/std normalization of RGB in [0, 1]; outputs
  [C2, C3, C4, C5] for the FPN neck. The stem and layer1 are frozen (torchvision's
  trainable_backbone_layers=3).
- `torchvision_mobilenet_v3_large_fpn`: MobileNetV3-Large (hard-swish, squeeze-excitation
  with hard-sigmoid; BatchNorm eps 1e-5, as the detection builder passes it) whose last two stride-32 maps feed the FPN, as
  torchvision's fasterrcnn_mobilenet_v3_large_fpn.
- `conv_fc_head`: FastRCNNConvFCHead (fasterrcnn_resnet50_fpn_v2's box head), convs with
  BatchNorm then fully connected layers.

Layer names are torchvision's module paths with `_` for `.` (layer1.0.conv1 ->
layer1_0_conv1; the stem's conv1 / bn1 -> stem_conv1 / stem_bn1), which the converter reads.
"""

import keras

from detect.models.blocks import PixelNormalization, fc_head

IMAGENET_MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)
TORCHVISION_BACKBONES = ("torchvision_resnet50_fpn", "torchvision_mobilenet_v3_large_fpn")


@keras.saving.register_keras_serializable(package="detect")
class FrozenBatchNormalization(keras.layers.BatchNormalization):
    """BatchNormalization that always uses its stored statistics and never trains
    (torchvision's FrozenBatchNorm2d): y = (x - mean) / sqrt(var + eps) * gamma + beta."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.trainable = False

    def call(self, inputs, training=None, mask=None):
        return super().call(inputs, training=False, mask=mask)


def _conv_bn(x, filters, kernel, stride, name, bn_name, relu=True):
    """torch Conv2d(padding=kernel // 2, bias=False) + frozen BN (+ ReLU). A strided conv
    pads explicitly: Keras' "same" would pad only the bottom/right of an even-sized map."""
    pad = kernel // 2
    padding = "same"
    if pad and stride > 1:
        x = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
        padding = "valid"
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=False, name=name)(x)
    x = FrozenBatchNormalization(epsilon=1e-5, name=bn_name)(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _bottleneck(x, width, stride, name, downsample):
    shortcut = x
    y = _conv_bn(x, width, 1, 1, f"{name}_conv1", f"{name}_bn1")
    y = _conv_bn(y, width, 3, stride, f"{name}_conv2", f"{name}_bn2")
    y = _conv_bn(y, 4 * width, 1, 1, f"{name}_conv3", f"{name}_bn3", relu=False)
    if downsample:
        shortcut = keras.layers.Conv2D(4 * width, 1, strides=stride, use_bias=False,
                                       name=f"{name}_downsample_0")(x)
        shortcut = FrozenBatchNormalization(epsilon=1e-5, name=f"{name}_downsample_1")(shortcut)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def resnet_trunk(blocks=(3, 4, 6, 3), name="torchvision_resnet50"):
    """images (N, H, W, 3) RGB [0, 255] -> [C2, C3, C4, C5] (strides 4..32; 256..2048 ch)."""
    inputs = keras.Input((None, None, 3), name="images")
    x = PixelNormalization(IMAGENET_MEAN_RGB, IMAGENET_STD_RGB, name="normalize")(inputs)
    x = keras.layers.ZeroPadding2D(3, name="stem_pad")(x)
    x = keras.layers.Conv2D(64, 7, strides=2, use_bias=False, name="stem_conv1")(x)
    x = FrozenBatchNormalization(epsilon=1e-5, name="stem_bn1")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    # After ReLU every value is >= 0: zero padding is torch's -inf padding of the max-pool.
    x = keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
    x = keras.layers.MaxPool2D(3, strides=2, name="stem_maxpool")(x)
    outputs = []
    for stage, (count, width) in enumerate(zip(blocks, (64, 128, 256, 512)), start=1):
        for block in range(count):
            stride = 2 if (block == 0 and stage > 1) else 1
            x = _bottleneck(x, width, stride, f"layer{stage}_{block}", downsample=block == 0)
        outputs.append(x)
    trunk = keras.Model(inputs, outputs, name=f"{name}_fpn_trunk")
    for layer in trunk.layers:  # trainable_backbone_layers=3: layer2..layer4 train
        if layer.name.startswith(("stem_", "layer1_")):
            layer.trainable = False
    return trunk


# MobileNetV3-Large (Howard et al. 2019), torchvision's table: kernel, expanded channels,
# output channels, squeeze-excitation, activation (RE = ReLU, HS = hard-swish), stride.
_MOBILENET_V3_LARGE = (
    (3, 16, 16, False, "RE", 1), (3, 64, 24, False, "RE", 2), (3, 72, 24, False, "RE", 1),
    (5, 72, 40, True, "RE", 2), (5, 120, 40, True, "RE", 1), (5, 120, 40, True, "RE", 1),
    (3, 240, 80, False, "HS", 2), (3, 200, 80, False, "HS", 1), (3, 184, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1), (3, 480, 112, True, "HS", 1), (3, 672, 112, True, "HS", 1),
    (5, 672, 160, True, "HS", 2), (5, 960, 160, True, "HS", 1), (5, 960, 160, True, "HS", 1),
)


def _make_divisible(value, divisor=8):
    """torchvision's _make_divisible: nearest multiple of `divisor`, never below 90%."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


def _hardsigmoid(x):
    return keras.ops.relu6(x + 3.0) / 6.0


def _hardswish(x):
    return x * keras.ops.relu6(x + 3.0) / 6.0


@keras.saving.register_keras_serializable(package="detect")
class HardSwish(keras.layers.Layer):
    """x * relu6(x + 3) / 6 (torch's Hardswish)."""

    def call(self, x):
        return _hardswish(x)


@keras.saving.register_keras_serializable(package="detect")
class SqueezeExcitation(keras.layers.Layer):
    """torchvision's SqueezeExcitation: x * hardsigmoid(fc2(relu(fc1(mean over H, W))))."""

    def __init__(self, channels, squeeze, **kwargs):
        super().__init__(**kwargs)
        self.channels, self.squeeze = int(channels), int(squeeze)
        self.fc1 = keras.layers.Conv2D(self.squeeze, 1, name="fc1")
        self.fc2 = keras.layers.Conv2D(self.channels, 1, name="fc2")

    def build(self, input_shape):
        self.fc1.build((None, 1, 1, self.channels))
        self.fc2.build((None, 1, 1, self.squeeze))

    def call(self, x):
        scale = keras.ops.mean(x, axis=(1, 2), keepdims=True)
        scale = self.fc2(keras.ops.relu(self.fc1(scale)))
        return x * _hardsigmoid(scale)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "squeeze": self.squeeze}


def _act(x, kind, name):
    if kind == "HS":
        return HardSwish(name=name)(x)
    return keras.layers.ReLU(name=name)(x)


def _mobilenet_bn(x, name):
    # The detection builder replaces MobileNetV3's BatchNorm (eps 1e-3) by its norm_layer
    # argument, BatchNorm2d / FrozenBatchNorm2d with their default eps 1e-5.
    return FrozenBatchNormalization(epsilon=1e-5, name=name)(x)


def _mobilenet_conv(x, filters, kernel, stride, name, act, depthwise=False):
    """Conv2dNormActivation: conv (torch padding (k - 1) // 2) + BN + activation; `name` is
    the torchvision module path of the block (its .0 conv, .1 BN)."""
    pad = (kernel - 1) // 2
    if pad:
        x = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
    if depthwise:
        x = keras.layers.DepthwiseConv2D(kernel, strides=stride, use_bias=False, name=f"{name}_0")(x)
    else:
        x = keras.layers.Conv2D(filters, kernel, strides=stride, use_bias=False, name=f"{name}_0")(x)
    x = _mobilenet_bn(x, f"{name}_1")
    return x if act is None else _act(x, act, f"{name}_2")


def mobilenet_v3_large_trunk():
    """images -> [features.13 output (stride 32, 160 ch), features.16 output (stride 32, 960 ch)]:
    the maps torchvision's _mobilenet_extractor(fpn=True) returns (its last two stages)."""
    inputs = keras.Input((None, None, 3), name="images")
    x = PixelNormalization(IMAGENET_MEAN_RGB, IMAGENET_STD_RGB, name="normalize")(inputs)
    x = _mobilenet_conv(x, 16, 3, 2, "features_0", "HS")
    channels = 16
    outputs = {}
    for index, (kernel, expanded, out, se, act, stride) in enumerate(_MOBILENET_V3_LARGE, start=1):
        name = f"features_{index}_block"
        y = x
        part = 0
        if expanded != channels:
            y = _mobilenet_conv(y, expanded, 1, 1, f"{name}_{part}", act)
            part += 1
        y = _mobilenet_conv(y, expanded, kernel, stride, f"{name}_{part}", act, depthwise=True)
        part += 1
        if se:
            y = SqueezeExcitation(expanded, _make_divisible(expanded // 4), name=f"{name}_{part}")(y)
            part += 1
        y = _mobilenet_conv(y, out, 1, 1, f"{name}_{part}", None)
        if stride == 1 and channels == out:
            y = keras.layers.Add(name=f"features_{index}_add")([y, x])
        x, channels = y, out
        outputs[index] = x
    last = _mobilenet_conv(x, 6 * channels, 1, 1, "features_16", "HS")
    trunk = keras.Model(inputs, [outputs[13], last], name="torchvision_mobilenet_v3_large_fpn_trunk")
    # trainable_layers=3 of torchvision's extractor: its stages start at features 0, 2, 4,
    # 7, 13, 16 and the last three train, so features 0..6 stay fixed.
    frozen = tuple(f"features_{i}_" for i in range(7))
    for layer in trunk.layers:
        if layer.name.startswith(frozen):
            layer.trainable = False
    return trunk


def conv_fc_head(input_shape, convs, fcs, name="conv_fc_head"):
    """FastRCNNConvFCHead: len(convs) x [3x3 conv (no bias) + BatchNorm + ReLU], flatten,
    fully connected + ReLU layers of widths `fcs`. Names: box_head_<i>_0 (conv),
    box_head_<i>_1 (BN), box_head_<j> (Dense), torchvision's nn.Sequential indices."""
    inputs = keras.Input(input_shape, name="roi_features")
    x = inputs
    for i, channels in enumerate(convs):
        x = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False, name=f"box_head_{i}_0")(x)
        x = FrozenBatchNormalization(epsilon=1e-5, name=f"box_head_{i}_1")(x)
        x = keras.layers.ReLU(name=f"box_head_{i}_2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    index = len(convs) + 1
    for width in fcs:
        x = keras.layers.Dense(width, activation="relu", name=f"box_head_{index}")(x)
        index += 2
    return keras.Model(inputs, x, name=name)


def build_torchvision_backbone(name, weights="none", roi_size=7, head_dim=1024, fpn_channels=256,
                               head_convs=0, head_fcs=2, svd_ranks=None):
    """(trunk, box head, info) for the torchvision backbones (see the module docstring).

    The box head is TwoMLPHead (fc6/fc7 of head_dim) when head_convs == 0, else
    conv_fc_head(head_convs x fpn_channels convs, head_fcs fcs of head_dim).
    """
    from detect.errors import DetectError

    if weights not in ("none",):
        raise DetectError(f"backbone.weights: {name} loads its weights with `detect weights convert` "
                          f"(or model.init), not backbone.weights ({weights!r})")
    if name == "torchvision_resnet50_fpn":
        trunk, strides = resnet_trunk(), (4, 8, 16, 32, 64)
    elif name == "torchvision_mobilenet_v3_large_fpn":
        trunk, strides = mobilenet_v3_large_trunk(), (32, 32, 64)
    else:
        raise DetectError(f"backbone.name: unknown torchvision backbone {name!r}")
    shape = (roi_size, roi_size, fpn_channels)
    if head_convs:
        roi_head = conv_fc_head(shape, [fpn_channels] * int(head_convs), [head_dim] * int(head_fcs))
    else:
        roi_head = fc_head(shape, head_dim, svd_ranks=svd_ranks)
    info = {"channels": int(fpn_channels), "stride": strides[0], "strides": strides, "roi_pool_size": roi_size,
            "fpn": True}
    return trunk, roi_head, info
