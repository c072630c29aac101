"""Feature Pyramid Network neck (Lin et al. 2017), as detectron2's FPN with LastLevelMaxPool.

call([C2, C3, C4, C5]) -> [P2, P3, P4, P5, P6]: a 1x1 lateral conv brings each Ci to
`channels`; top-down, the coarser merged map is upsampled x2 (nearest) and added; a 3x3
output conv smooths each sum; P6 is P5 subsampled by a stride-2 max-pool of size 1.
Ci has stride 2**i (C2: 4 ... C5: 32), so Pi has stride 2**i too (P6: 64).

Shapes: N images, Hi x Wi cells of level i (any sizes: the upsampled map is cut to the
lateral's size, e.g. 84 -> 168 cut to 167 on an 800 x 1333 ResNet input), C `channels`.
"""

import keras
from keras import ops

STRIDES = (4, 8, 16, 32, 64)  # P2..P6


def upsample_to(x, like):
    """Nearest-neighbour x2 upsampling of x (N, h, w, C), cut to like's (N, H, W, .) size."""
    x = ops.repeat(ops.repeat(x, 2, axis=1), 2, axis=2)
    return x[:, : ops.shape(like)[1], : ops.shape(like)[2], :]


@keras.saving.register_keras_serializable(package="detect")
class FeaturePyramid(keras.layers.Layer):
    """The FPN neck: lateral 1x1 + top-down + 3x3 output convs, P2..P5 plus P6 (max-pool).

    Args:
      channels: output channels of every level (256 in the paper).
      num_inputs: backbone maps C2..C5 it takes (4).
      norm: "none" (convs with bias, the paper) or "batch" (convs without bias, each
        followed by a frozen BatchNorm: fasterrcnn_resnet50_fpn_v2).
      input_strides: the strides of the input maps when they are not C2..C5's 4..32; a map
        of the same stride as the next coarser one takes it without upsampling
        (MobileNetV3's two stride-32 maps).
    """

    def __init__(self, channels=256, num_inputs=4, norm="none", input_strides=None, **kwargs):
        super().__init__(**kwargs)
        if norm not in ("none", "batch"):
            raise ValueError(f"FeaturePyramid norm must be 'none' or 'batch', got {norm!r}")
        self.channels = int(channels)
        self.num_inputs = int(num_inputs)
        self.norm = norm
        self.input_strides = None if input_strides is None else tuple(int(s) for s in input_strides)
        bias = norm == "none"
        self.lateral = [keras.layers.Conv2D(self.channels, 1, use_bias=bias, name=f"lateral{i + 2}")
                        for i in range(self.num_inputs)]
        self.output_convs = [
            keras.layers.Conv2D(self.channels, 3, padding="same", use_bias=bias, name=f"output{i + 2}")
            for i in range(self.num_inputs)
        ]
        self.lateral_norms, self.output_norms = [], []
        if norm == "batch":
            from detect.models.torchvision_backbones import FrozenBatchNormalization

            self.lateral_norms = [FrozenBatchNormalization(epsilon=1e-5, name=f"lateral{i + 2}_bn")
                                  for i in range(self.num_inputs)]
            self.output_norms = [FrozenBatchNormalization(epsilon=1e-5, name=f"output{i + 2}_bn")
                                 for i in range(self.num_inputs)]
        self.extra = keras.layers.MaxPool2D(pool_size=1, strides=2, name=f"p{self.num_inputs + 2}_pool")

    @property
    def strides(self):
        if self.input_strides is not None:
            return self.input_strides + (2 * self.input_strides[-1],)
        return STRIDES[: self.num_inputs + 1]

    def build(self, input_shapes):
        for lateral, output, shape in zip(self.lateral, self.output_convs, input_shapes):
            lateral.build(tuple(shape))
            output.build(tuple(shape[:-1]) + (self.channels,))
        for norm, shape in zip(self.lateral_norms + self.output_norms, list(input_shapes) * 2):
            norm.build(tuple(shape[:-1]) + (self.channels,))

    def _lateral(self, i, x):
        x = self.lateral[i](x)
        return self.lateral_norms[i](x) if self.lateral_norms else x

    def _output(self, i, x):
        x = self.output_convs[i](x)
        return self.output_norms[i](x) if self.output_norms else x

    def _same_stride(self, i):
        """True where input map i has the stride of map i + 1 (no upsampling between them)."""
        return self.input_strides is not None and self.input_strides[i] == self.input_strides[i + 1]

    def call(self, inputs):
        if len(inputs) != self.num_inputs:
            raise ValueError(f"FeaturePyramid takes {self.num_inputs} maps, got {len(inputs)}")
        merged = [None] * self.num_inputs
        top = self._lateral(self.num_inputs - 1, inputs[-1])
        merged[-1] = top
        for i in range(self.num_inputs - 2, -1, -1):
            lateral = self._lateral(i, inputs[i])
            top = lateral + (top if self._same_stride(i) else upsample_to(top, lateral))
            merged[i] = top
        outputs = [self._output(i, x) for i, x in enumerate(merged)]
        return outputs + [self.extra(outputs[-1])]

    def compute_output_shape(self, input_shapes):
        shapes = [tuple(s[:-1]) + (self.channels,) for s in input_shapes]
        n, h, w, c = shapes[-1]
        half = (lambda v: None if v is None else (v + 1) // 2)
        return shapes + [(n, half(h), half(w), c)]

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "num_inputs": self.num_inputs, "norm": self.norm,
                "input_strides": None if self.input_strides is None else list(self.input_strides)}
