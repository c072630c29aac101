"""Multi-level RoIAlign over a feature pyramid (Lin et al. 2017, eq. 1).

Each RoI is pooled from one level: k = floor(k0 + log2(sqrt(w * h) / canonical_size)),
clamped to the pyramid's levels, with k0 = `canonical_level` (4) and canonical_size 224
for ResNet (an ImageNet-sized RoI maps to P4). The tiny FPN detector scales 224 by the
same factor as its anchors (half of ResNet's, so 112): see configs/faster_rcnn/tiny_fpn_multiscale.yaml.

Shapes: B images, R RoIs per image, L levels (P2..P5: L = 4, strides 4..32), S output
size, C channels (equal on every level). RoIs are (B, R, 4) xyxy image pixels.
"""

import math

import keras
from keras import ops

from detect.ops import dispatch
from detect.ops.roi_pool import roi_align_flat


def assign_levels(boxes, min_level, max_level, canonical_size=224.0, canonical_level=4, rule="detectron2"):
    """(X,) int32 pyramid level of each (X, 4) xyxy box, in [min_level, max_level].

    A degenerate box (zero area) goes to min_level, as log2(0) = -inf does after clamping.
    rule "detectron2": floor(k0 + log2(s / s0 + 1e-8)); "torchvision" (its LevelMapper):
    floor(k0 + log2(s / s0) + 1e-6). They differ only within 1e-6 of a level boundary.
    """
    boxes = ops.cast(boxes, "float32")
    area = ops.maximum(boxes[:, 2] - boxes[:, 0], 0.0) * ops.maximum(boxes[:, 3] - boxes[:, 1], 0.0)
    scale = ops.sqrt(area)
    if rule == "torchvision":
        level = ops.floor(canonical_level + ops.log2(scale / float(canonical_size)) + 1e-6)
        return ops.cast(ops.clip(level, float(min_level), float(max_level)), "int32")
    # 1e-8 keeps log2 finite; detectron2 adds the same epsilon (assign_boxes_to_levels).
    level = ops.floor(canonical_level + ops.log(scale / float(canonical_size) + 1e-8) / math.log(2.0))
    return ops.cast(ops.clip(level, float(min_level), float(max_level)), "int32")


@keras.saving.register_keras_serializable(package="detect")
class MultiLevelRoIAlign(keras.layers.Layer):
    """RoIAlign with each RoI read from its pyramid level (torchvision's MultiScaleRoIAlign,
    detectron2's ROIPooler).

    Args:
      output_size: S.
      strides: pixels per cell of the pooled levels, finest first (e.g. 4, 8, 16, 32);
        level k has stride 2**k, so the first stride fixes min_level.
      sampling_ratio, canonical_size, canonical_level: see the module docstring.
      aligned: RoIAlign's half-cell shift (roi_align_flat); False pools as torchvision's
        MultiScaleRoIAlign does, which also assigns levels by its own rule (assign_levels).
    call(features: list of L maps (B, Hl, Wl, C), finest first (extra maps after the L
    pooled ones are ignored, e.g. P6), rois (B, R, 4)) -> (B, R, S, S, C).
    """

    def __init__(self, output_size=7, strides=(4, 8, 16, 32), sampling_ratio=2, canonical_size=224.0,
                 canonical_level=4, aligned=True, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.aligned = bool(aligned)
        self.output_size = int(output_size)
        self.strides = tuple(int(s) for s in strides)
        self.sampling_ratio = int(sampling_ratio)
        self.canonical_size = float(canonical_size)
        self.canonical_level = int(canonical_level)
        levels = [math.log2(s) for s in self.strides]
        consecutive = list(range(int(levels[0]), int(levels[0]) + len(levels)))
        if any(level != int(level) for level in levels) or levels != consecutive:
            raise ValueError(f"strides must be consecutive powers of two, got {self.strides}")
        self.min_level = int(levels[0])
        self.max_level = self.min_level + len(self.strides) - 1

    def call(self, features, rois):
        features = [ops.convert_to_tensor(f) for f in features[: len(self.strides)]]
        rois = ops.stop_gradient(ops.cast(rois, "float32"))
        batch, num_rois = ops.shape(rois)[0], ops.shape(rois)[1]
        flat = ops.reshape(rois, (-1, 4))
        image_index = ops.repeat(ops.arange(batch, dtype="int32"), num_rois)
        levels = assign_levels(flat, self.min_level, self.max_level, self.canonical_size, self.canonical_level,
                               rule="detectron2" if self.aligned else "torchvision")
        if dispatch.dynamic_shapes(flat, *features):
            merged = self._pool_by_level(features, flat, image_index, levels)
        else:
            merged = self._pool_every_level(features, flat, image_index, levels)
        size = self.output_size
        return ops.reshape(merged, (batch, num_rois, size, size, ops.shape(features[0])[-1]))

    def _pool_by_level(self, features, flat, image_index, levels):
        """Each level pools only its own RoIs (dynamic sizes), stitched back in RoI order."""
        positions = dispatch.level_positions(levels, self.min_level, len(self.strides))
        pooled = [
            roi_align_flat(level_features, ops.take(flat, chosen, axis=0), ops.take(image_index, chosen, axis=0),
                           self.output_size, 1.0 / stride, self.sampling_ratio, aligned=self.aligned)
            for chosen, level_features, stride in zip(positions, features, self.strides)
        ]
        return dispatch.stitch(positions, pooled)

    def _pool_every_level(self, features, flat, image_index, levels):
        """Static shapes: every level pools every RoI and each RoI keeps its own level's."""
        merged = None
        for offset, (level_features, stride) in enumerate(zip(features, self.strides)):
            pooled = roi_align_flat(level_features, flat, image_index, self.output_size, 1.0 / stride,
                                    self.sampling_ratio, aligned=self.aligned)
            chosen = (levels == self.min_level + offset)[:, None, None, None]
            merged = pooled if merged is None else ops.where(chosen, pooled, merged)
        return merged

    def compute_output_shape(self, features_shape, rois_shape):
        return (rois_shape[0], rois_shape[1], self.output_size, self.output_size, features_shape[0][-1])

    def get_config(self):
        return {
            **super().get_config(), "output_size": self.output_size, "strides": list(self.strides),
            "sampling_ratio": self.sampling_ratio, "canonical_size": self.canonical_size,
            "canonical_level": self.canonical_level, "aligned": self.aligned,
        }
