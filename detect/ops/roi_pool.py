"""RoI feature extraction: RoIAlign (aligned, bilinear) and RoIPool (Fast R-CNN max pooling).

Shapes: B images, Hf x Wf feature cells, C channels, R RoIs per image, S output size.
RoIs are (B, R, 4) xyxy in image pixels; feature cell k covers image pixels
[k * stride, (k + 1) * stride) with stride = 1 / spatial_scale, so its centre is at
(k + 0.5) * stride. No gradient flows to the RoIs (they are proposals, held fixed).
"""

import keras
from keras import ops

from detect import compat
from detect.ops import dispatch
from detect.ops.bilinear import bilinear_crops


def _check_size(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def roi_align_flat(features, boxes, box_indices, output_size, spatial_scale, sampling_ratio, method=None,
                   aligned=True):
    """RoIAlign of X boxes given as a flat list (the arithmetic of `RoIAlign`).

    Args:
      features: (B, Hf, Wf, C); boxes: (X, 4) xyxy image pixels; box_indices: (X,) int32
        image of each box; spatial_scale: 1 / stride of `features`.
      method: "crop_and_resize" (the backend's kernel where it has one, the fastest:
        TensorFlow's crop_and_resize, torchvision's roi_align; ops/dispatch.py), "gather" (keras.ops gathers: deterministic gradients on GPU) or None:
        "gather" when TensorFlow's op determinism is on, else "crop_and_resize".
      aligned: True (detectron2's aligned=True: a half-cell shift, so cell k's centre is at
        k + 0.5) or False (torchvision's and the original RoIAlign: no shift, RoIs at least
        one cell wide and high).
    Returns:
      (X, S, S, C) in the dtype of `features`.
    """
    boxes = ops.stop_gradient(ops.cast(boxes, "float32"))
    size, ratio = int(output_size), int(sampling_ratio)
    if method is None:
        method = "gather" if compat.op_determinism_enabled() else "crop_and_resize"
    if method == "gather":
        pooled = _roi_align_by_crops(features, boxes, box_indices, size, spatial_scale, ratio, aligned, method)
    else:
        pooled = dispatch.roi_align(
            features, boxes, ops.cast(box_indices, "int32"), size, spatial_scale, ratio, aligned,
            portable=lambda: _roi_align_by_crops(features, boxes, box_indices, size, spatial_scale, ratio,
                                                 aligned, method),
        )
    return ops.cast(pooled, features.dtype)


def _roi_align_by_crops(features, boxes, box_indices, size, spatial_scale, ratio, aligned, method):
    """roi_align_flat as bilinear crops of size x ratio samples, then average pooling (float32)."""
    samples = size * ratio
    height, width = ops.shape(features)[1], ops.shape(features)[2]

    # Feature coordinates in which cell k's centre is at k (hence the -0.5 when aligned).
    scaled = boxes * float(spatial_scale) - (0.5 if aligned else 0.0)
    if not aligned:
        right = scaled[:, 0] + ops.maximum(scaled[:, 2] - scaled[:, 0], 1.0)
        bottom = scaled[:, 1] + ops.maximum(scaled[:, 3] - scaled[:, 1], 1.0)
        scaled = ops.stack([scaled[:, 0], scaled[:, 1], right, bottom], axis=-1)
    step_x = (scaled[:, 2] - scaled[:, 0]) / samples
    step_y = (scaled[:, 3] - scaled[:, 1]) / samples
    # Replicating the border once reproduces detectron2's clamping for samples in
    # [-1, 0) and (H - 1, H]; crop_and_resize extrapolates 0 beyond that.
    padded = ops.pad(features, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="symmetric")
    # crop_and_resize samples the normalized box [y1, y2] at y1 * (Hp - 1) ...
    # y2 * (Hp - 1) inclusive, so the box spans the first to the last sample centre;
    # in the padded map cell k sits at k + 1 and the last row at Hp - 1 = Hf + 1.
    last_y = ops.cast(height + 1, "float32")
    last_x = ops.cast(width + 1, "float32")
    normalized = ops.stack(
        [
            (scaled[:, 1] + 0.5 * step_y + 1.0) / last_y,
            (scaled[:, 0] + 0.5 * step_x + 1.0) / last_x,
            (scaled[:, 3] - 0.5 * step_y + 1.0) / last_y,
            (scaled[:, 2] - 0.5 * step_x + 1.0) / last_x,
        ],
        axis=-1,
    )
    if method == "gather":
        crops = bilinear_crops(padded, normalized, box_indices, samples)
    else:
        crops = dispatch.crop_and_resize(padded, normalized, box_indices, samples, portable=bilinear_crops)
    # Average of each bin's ratio x ratio samples; average pooling is the same arithmetic
    # as a mean over a reshaped tensor, and several times faster on CPU.
    return ops.average_pool(crops, ratio, ratio, "valid")


class _RoILayer(keras.layers.Layer):
    """Shared plumbing: no autocast, so pixel RoIs keep float32 precision."""

    def __init__(self, output_size, spatial_scale, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.output_size = _check_size("output_size", output_size)
        self.spatial_scale = float(spatial_scale)

    def compute_output_shape(self, features_shape, rois_shape):
        size = self.output_size
        return (features_shape[0], rois_shape[1], size, size, features_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(output_size=self.output_size, spatial_scale=self.spatial_scale)
        return config


@keras.saving.register_keras_serializable(package="detect")
class RoIAlign(_RoILayer):
    """RoIAlign: aligned (detectron2 ROIAlign with aligned=True, the default) or not
    (aligned=False: torchvision's roi_align default; see roi_align_flat).

    Each of the S x S bins averages `sampling_ratio` x `sampling_ratio` bilinear samples
    taken at the centres of a regular sub-grid of the bin; a sample within one cell
    outside the map takes the border value, farther out it is 0.

    call(features (B, Hf, Wf, C), rois (B, R, 4) xyxy image pixels) -> (B, R, S, S, C)
    """

    def __init__(self, output_size=7, spatial_scale=1.0 / 16, sampling_ratio=2, aligned=True, **kwargs):
        super().__init__(output_size, spatial_scale, **kwargs)
        self.sampling_ratio = _check_size("sampling_ratio", sampling_ratio)
        self.aligned = bool(aligned)

    def call(self, features, rois):
        features = ops.convert_to_tensor(features)
        rois = ops.stop_gradient(ops.cast(rois, "float32"))
        batch, num_rois = ops.shape(rois)[0], ops.shape(rois)[1]
        image_index = ops.repeat(ops.arange(batch, dtype="int32"), num_rois)
        pooled = roi_align_flat(
            features, ops.reshape(rois, (-1, 4)), image_index,
            self.output_size, self.spatial_scale, self.sampling_ratio, aligned=self.aligned,
        )
        size = self.output_size
        return ops.reshape(pooled, (batch, num_rois, size, size, ops.shape(features)[-1]))

    def get_config(self):
        config = super().get_config()
        config.update(sampling_ratio=self.sampling_ratio, aligned=self.aligned)
        return config


def _c_round(values):
    """Rounds half away from zero like C's round(); a plain round rounds half to even."""
    return ops.sign(values) * ops.floor(ops.abs(values) + 0.5)


def _bin_edges(start, end, size, limit):
    """Caffe RoIPool bin edges along one axis.

    start, end: (B, R) float roi edges in image pixels times spatial_scale.
    Returns (B, R, S) int32 first and one-past-last cell of each bin, within [0, limit].
    """
    first = ops.cast(_c_round(start), "int32")
    last = ops.cast(_c_round(end), "int32")
    length = ops.maximum(last - first + 1, 1)
    bin_size = ops.cast(length, "float32") / float(size)
    index = ops.arange(size, dtype="float32")
    lower = ops.cast(ops.floor(index * bin_size[..., None]), "int32") + first[..., None]
    upper = ops.cast(ops.ceil((index + 1.0) * bin_size[..., None]), "int32") + first[..., None]
    return ops.clip(lower, 0, limit), ops.clip(upper, 0, limit)


def _floor_log2(values):
    """floor(log2(v)) of int32 values >= 1, exactly: the count of powers 2, 4, ... <= v."""
    return sum(ops.cast(values >= 2**j, "int32") for j in range(1, 31))


def _better(values_a, where_a, values_b, where_b):
    """Elementwise max of two (values, flat index) pairs; ties keep `a`."""
    take_b = values_b > values_a
    return ops.where(take_b, values_b, values_a), ops.where(take_b, where_b, where_a)


def _double_windows(values, where, step, axis):
    """Windows twice as long: position p merges itself with p + step (cut at the end)."""
    length = ops.shape(values)[axis]
    ahead = ops.minimum(ops.arange(length) + step, length - 1)
    return _better(values, where, ops.take(values, ahead, axis=axis), ops.take(where, ahead, axis=axis))


def _static_levels(length):
    """Window levels that cover any bin of an axis of `length` cells: 2**l <= length."""
    return max(int(length), 1).bit_length()


@keras.saving.register_keras_serializable(package="detect")
class RoIPool(_RoILayer):
    """Fast R-CNN RoI max pooling (the Caffe layer, as torchvision's roi_pool).

    The roi is rounded to cells (round(x1 * scale) .. round(x2 * scale), both ends
    included, at least 1 x 1), cut into S x S bins with floor / ceil edges, and each bin
    takes the max of its cells; a bin that lies outside the map gives 0. The gradient
    of each output goes to the one cell holding the max.

    Bin maxima and their cells are read from a table of maxima over power-of-two
    windows (a 2-D sparse table): any bin is the union of four such windows, so memory
    does not grow with R. The output gathers the max cells from the features, so the
    backward pass is a scatter of B * R * S * S * C values.

    call(features (B, Hf, Wf, C), rois (B, R, 4) xyxy image pixels) -> (B, R, S, S, C)
    """

    def __init__(self, output_size=7, spatial_scale=1.0 / 16, **kwargs):
        super().__init__(output_size, spatial_scale, **kwargs)

    def call(self, features, rois):
        features = ops.convert_to_tensor(features)
        rois = ops.stop_gradient(ops.cast(rois, "float32"))
        size = self.output_size
        batch, height, width = ops.shape(features)[0], ops.shape(features)[1], ops.shape(features)[2]
        scaled = rois * self.spatial_scale
        y_lo, y_hi = _bin_edges(scaled[..., 1], scaled[..., 3], size, height)
        x_lo, x_hi = _bin_edges(scaled[..., 0], scaled[..., 2], size, width)
        empty = ops.logical_or((y_hi <= y_lo)[..., :, None], (x_hi <= x_lo)[..., None, :])

        level_y = _floor_log2(ops.maximum(y_hi - y_lo, 1))
        level_x = _floor_log2(ops.maximum(x_hi - x_lo, 1))
        # table[ly, lx, b, y, x] = max of features[b, y:y + 2**ly, x:x + 2**lx], and
        # where[...] the flat index of that max in `features` (int32: maps below 2**31
        # values); TensorFlow builds only the levels some bin needs, other backends all
        # levels the map's size allows (static shapes).
        flat_index = ops.reshape(ops.arange(ops.size(features), dtype="int32"), ops.shape(features))
        table, where = dispatch.window_levels(
            ops.stop_gradient(features), flat_index, 2, level_x, _static_levels(features.shape[2] or 1),
            _double_windows,
        )
        table, where = dispatch.window_levels(table, where, 2, level_y, _static_levels(features.shape[1] or 1),
                                              _double_windows)  # rows: axis 2 of (Lx, B, H, W, C)
        # Two windows of the largest power-of-two size per axis, flush with each end of
        # the bin, cover it exactly; empty bins are pointed at a valid cell and zeroed.
        y_near = ops.minimum(y_lo, height - 1)
        y_far = ops.maximum(y_hi - 2**level_y, 0)
        x_near = ops.minimum(x_lo, width - 1)
        x_far = ops.maximum(x_hi - 2**level_x, 0)
        levels_x = ops.shape(table)[1]
        channels = ops.shape(features)[3]
        table_rows = ops.reshape(table, (-1, channels))
        where_rows = ops.reshape(where, (-1, channels))
        image = ops.arange(batch, dtype="int32")[:, None, None, None]

        def lookup(y, x):
            row = ((level_y[..., :, None] * levels_x + level_x[..., None, :]) * batch + image) * height
            row = (row + y[..., :, None]) * width + x[..., None, :]  # (B, R, S, S)
            return ops.take(table_rows, row, axis=0), ops.take(where_rows, row, axis=0)

        _, best = _better(
            *_better(*lookup(y_near, x_near), *lookup(y_near, x_far)),
            *_better(*lookup(y_far, x_near), *lookup(y_far, x_far)),
        )
        pooled = ops.take(ops.reshape(features, (-1,)), best, axis=0)
        return ops.where(empty[..., None], ops.zeros((), pooled.dtype), pooled)
