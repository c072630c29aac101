"""Backbones at stride 16 and their per-RoI heads.

Every backbone is a pair of Keras models built by `build_backbone`:

- `trunk`: images (N, H, W, 3) float32 RGB in [0, 255] -> features (N, H/16, W/16, C);
  pixel normalization is the trunk's first layer, so callers feed raw pixels.
- `roi_head`: pooled RoI features (R, S, S, C) -> one vector per RoI (R, D). VGG16 and
  `tiny` use fc6/fc7 (two fully connected layers, as in Fast R-CNN); ResNets use conv5_x
  (res5) followed by global average pooling, as in the ResNet paper's Faster R-CNN, fed
  with RoIs pooled at twice the output size (`roi_pool_size` says which size).

`weights`: "none" (random init), "imagenet" (Keras' cache `$KERAS_HOME/models/`, no
download needed when the file is there) or a path to a `.weights.h5` file for the trunk.
"""

import os

import keras

from detect.errors import DetectError

# (keras.applications constructor name, stride-16 layer, res5 first/last layer, cache file)
_APPLICATIONS = {
    "vgg16": ("VGG16", "block5_conv3", None, "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "resnet50": (
        "ResNet50",
        "conv4_block6_out",
        "conv5_block3_out",
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    "resnet101": (
        "ResNet101",
        "conv4_block23_out",
        "conv5_block3_out",
        "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
}

# Caffe-style normalization used by keras.applications VGG16 / ResNet (BGR, mean only).
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="detect")
class PixelNormalization(keras.layers.Layer):
    """(x[..., order] - mean) / std for RGB [0, 255] input; `bgr` reverses channels first."""

    def __init__(self, mean, std, bgr=False, **kwargs):
        super().__init__(**kwargs)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.bgr = bool(bgr)

    def call(self, images):
        if self.bgr:
            images = images[..., ::-1]
        mean = keras.ops.convert_to_tensor(self.mean, dtype=images.dtype)
        std = keras.ops.convert_to_tensor(self.std, dtype=images.dtype)
        return (images - mean) / std

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std, "bgr": self.bgr}


def keras_cache_path(file_name):
    """Where keras.applications looks for a downloaded weights file."""
    home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return os.path.join(home, "models", file_name)


def _imagenet_weights(name):
    file_name = _APPLICATIONS[name][3]
    path = keras_cache_path(file_name)
    if not os.path.isfile(path):
        raise DetectError(
            f"ImageNet weights for {name} are not in Keras' cache: place {file_name} at {path} "
            "(or use backbone.weights: none)"
        )
    return path


def _tiny_trunk(width):
    """4 x [3x3 conv + BatchNorm + ReLU + 2x2 max-pool]: stride 16, 8*width channels."""
    inputs = keras.Input((None, None, 3), name="images")
    x = PixelNormalization((127.5, 127.5, 127.5), (63.75, 63.75, 63.75), name="normalize")(inputs)
    for i in range(4):
        channels = width * 2**i
        x = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False, name=f"conv{i + 1}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i + 1}")(x)
        x = keras.layers.ReLU(name=f"relu{i + 1}")(x)
        x = keras.layers.MaxPool2D(2, name=f"pool{i + 1}")(x)
    return keras.Model(inputs, x, name="tiny_trunk")


def fc_head(input_shape, dim, name="fc_head", svd_ranks=None):
    """fc6/fc7: flatten -> Dense(dim) -> ReLU -> Dense(dim) -> ReLU.

    `svd_ranks=(r6, r7)` factorizes both layers as truncated SVD does (detect.models.svd):
    `fc6_svd` Dense(r6, linear, no bias) -> `fc6` Dense(dim, ReLU); likewise fc7. A rank is
    clipped to min(inputs, dim), where the factorization is already exact.
    """
    inputs = keras.Input(input_shape, name="roi_features")
    x = keras.layers.Flatten(name="flatten")(inputs)
    for layer_name, rank in zip(("fc6", "fc7"), svd_ranks or (None, None)):
        if rank is not None:
            rank = min(int(rank), int(x.shape[-1]), int(dim))
            x = keras.layers.Dense(rank, use_bias=False, name=f"{layer_name}_svd")(x)
        x = keras.layers.Dense(dim, activation="relu", name=layer_name)(x)
    return keras.Model(inputs, x, name=name)


def _application(name, weights):
    constructor = getattr(keras.applications, _APPLICATIONS[name][0])
    model = constructor(include_top=False, weights=None, input_shape=(None, None, 3))
    if weights == "imagenet":
        model.load_weights(_imagenet_weights(name))
    return model


def _freeze_batchnorm(model):
    # Detection batches are too small for batch statistics: BN is a fixed affine map.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def build_backbone(name, weights="none", roi_size=7, head_dim=4096, width=32, head_svd_ranks=None):
    """Build (trunk, roi_head, info) for a backbone name.

    Args:
      name: tiny | vgg16 | resnet50 | resnet101.
      weights: none | imagenet | path to a trunk `.weights.h5` file.
      roi_size: S, the RoI output size the head receives is (roi_pool_size, roi_pool_size).
      head_dim: fc6/fc7 width for fc heads.
      width: first-block channels of the tiny trunk.
      head_svd_ranks: (r6, r7) to build fc6/fc7 factorized (see fc_head); fc heads only.
    Returns:
      trunk, roi_head, info dict with `channels` (C), `stride` (16), `roi_pool_size`.
    """
    if weights not in ("none", "imagenet") and not os.path.isfile(str(weights)):
        raise DetectError(f"backbone.weights: file not found: {weights}")
    if head_svd_ranks is not None and name not in ("tiny", "vgg16"):
        raise DetectError(f"head SVD ranks apply to fc6/fc7 heads (tiny, vgg16); {name} has a res5 head")
    if name == "tiny":
        if weights == "imagenet":
            raise DetectError("backbone.weights: the tiny backbone has no ImageNet weights")
        trunk = _tiny_trunk(width)
        channels = width * 8
        roi_head = fc_head((roi_size, roi_size, channels), head_dim, svd_ranks=head_svd_ranks)
        pool_size = roi_size
    elif name in _APPLICATIONS:
        app = _application(name, weights)
        _, out_layer, res5_out, _ = _APPLICATIONS[name]
        inputs = keras.Input((None, None, 3), name="images")
        mean = _CAFFE_MEAN_BGR
        x = PixelNormalization(mean, (1.0, 1.0, 1.0), bgr=True, name="normalize")(inputs)
        features = keras.Model(app.input, app.get_layer(out_layer).output)(x)
        trunk = keras.Model(inputs, features, name=f"{name}_trunk")
        channels = features.shape[-1]
        if name == "vgg16":
            # conv1 and conv2 stay frozen, as in the Fast R-CNN paper.
            for layer in app.layers:
                if layer.name.startswith(("block1_", "block2_")):
                    layer.trainable = False
            roi_head = fc_head((roi_size, roi_size, channels), head_dim, svd_ranks=head_svd_ranks)
            pool_size = roi_size
        else:
            _freeze_batchnorm(app)
            for layer in app.layers:
                if layer.name.startswith(("conv1_", "conv2_")):
                    layer.trainable = False
            res5 = keras.Model(app.get_layer(out_layer).output, app.get_layer(res5_out).output)
            roi_inputs = keras.Input((2 * roi_size, 2 * roi_size, channels), name="roi_features")
            y = res5(roi_inputs)
            y = keras.layers.GlobalAveragePooling2D(name="res5_pool")(y)
            roi_head = keras.Model(roi_inputs, y, name="res5_head")
            pool_size = 2 * roi_size
    else:
        raise DetectError(f"backbone.name: unknown backbone {name!r} (tiny, vgg16, resnet50, resnet101)")
    if weights not in ("none", "imagenet"):
        try:
            trunk.load_weights(weights)
        except Exception as e:  # noqa: BLE001 - any load failure is the user's file
            raise DetectError(f"backbone.weights: cannot load {weights}: {e}") from None
    return trunk, roi_head, {"channels": int(channels), "stride": 16, "roi_pool_size": pool_size}
