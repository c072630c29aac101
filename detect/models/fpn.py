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
    """

    def __init__(self, channels=256, num_inputs=4, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.num_inputs = int(num_inputs)
        self.lateral = [keras.layers.Conv2D(self.channels, 1, name=f"lateral{i + 2}") for i in range(self.num_inputs)]
        self.output_convs = [
            keras.layers.Conv2D(self.channels, 3, padding="same", name=f"output{i + 2}") for i in range(self.num_inputs)
        ]
        self.extra = keras.layers.MaxPool2D(pool_size=1, strides=2, name=f"p{self.num_inputs + 2}_pool")

    @property
    def strides(self):
        return STRIDES[: self.num_inputs + 1]

    def build(self, input_shapes):
        for lateral, output, shape in zip(self.lateral, self.output_convs, input_shapes):
            lateral.build(tuple(shape))
            output.build(tuple(shape[:-1]) + (self.channels,))

    def call(self, inputs):
        if len(inputs) != self.num_inputs:
            raise ValueError(f"FeaturePyramid takes {self.num_inputs} maps, got {len(inputs)}")
        merged = [None] * self.num_inputs
        top = self.lateral[-1](inputs[-1])
        merged[-1] = top
        for i in range(self.num_inputs - 2, -1, -1):
            lateral = self.lateral[i](inputs[i])
            top = lateral + upsample_to(top, lateral)
            merged[i] = top
        outputs = [conv(x) for conv, x in zip(self.output_convs, merged)]
        return outputs + [self.extra(outputs[-1])]

    def compute_output_shape(self, input_shapes):
        shapes = [tuple(s[:-1]) + (self.channels,) for s in input_shapes]
        n, h, w, c = shapes[-1]
        half = (lambda v: None if v is None else (v + 1) // 2)
        return shapes + [(n, half(h), half(w), c)]

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "num_inputs": self.num_inputs}
