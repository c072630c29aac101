"""Layers and heads the backbone modules share: raw-pixel normalization and the fc6/fc7 box head."""

import keras


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


def fc_head(input_shape, dim, name="fc_head", svd_ranks=None, dropout=0.0):
    """fc6/fc7: flatten -> Dense(dim) -> ReLU [-> Dropout] -> Dense(dim) -> ReLU [-> Dropout].

    Flatten is Keras' row-major (y, x, channel) order, the order of VGG16's own flatten
    before fc1, so ImageNet fc1/fc2 kernels load into fc6/fc7 unchanged. `dropout` > 0 adds
    Dropout layers `drop6` / `drop7` (active only with training=True).
    `svd_ranks=(r6, r7)` factorizes both layers as truncated SVD does (detect.models.svd):
    `fc6_svd` Dense(r6, linear, no bias) -> `fc6` Dense(dim, ReLU); likewise fc7. A rank is
    clipped to min(inputs, dim), where the factorization is already exact.
    """
    inputs = keras.Input(input_shape, name="roi_features")
    x = keras.layers.Flatten(name="flatten")(inputs)
    for index, rank in zip((6, 7), svd_ranks or (None, None)):
        layer_name = f"fc{index}"
        if rank is not None:
            rank = min(int(rank), int(x.shape[-1]), int(dim))
            x = keras.layers.Dense(rank, use_bias=False, name=f"{layer_name}_svd")(x)
        x = keras.layers.Dense(dim, activation="relu", name=layer_name)(x)
        if dropout > 0:
            x = keras.layers.Dropout(dropout, name=f"drop{index}")(x)
    return keras.Model(inputs, x, name=name)
