"""RoI feature extraction: RoIAlign (aligned, bilinear) and RoIPool (Fast R-CNN max pooling).

Shapes: B images, Hf x Wf feature cells, C channels, R RoIs per image, S output size.
RoIs are (B, R, 4) xyxy in image pixels; feature cell k covers image pixels
[k * stride, (k + 1) * stride) with stride = 1 / spatial_scale, so its centre is at
(k + 0.5) * stride. No gradient flows to the RoIs (they are proposals, held fixed).
"""

import keras
import tensorflow as tf
from keras import ops

from detect import compat
from detect.ops import dispatch
from detect.ops.bilinear import bilinear_crops


def _check_size(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def roi_align_flat(features, boxes, box_indices, output_size, spatial_scale, sampling_ratio, method=None):
    """Aligned RoIAlign of X boxes given as a flat list (the arithmetic of `RoIAlign`).

    Args:
      features: (B, Hf, Wf, C); boxes: (X, 4) xyxy image pixels; box_indices: (X,) int32
        image of each box; spatial_scale: 1 / stride of `features`.
      method: "crop_and_resize" (the backend's kernel where it has one: the fastest on
        CPU), "gather" (keras.ops gathers: deterministic gradients on GPU) or None:
        "gather" when TensorFlow's op determinism is on, else "crop_and_resize".
    Returns:
      (X, S, S, C) in the dtype of `features`.
    """
    boxes = ops.stop_gradient(ops.cast(boxes, "float32"))
    size, ratio = int(output_size), int(sampling_ratio)
    samples = size * ratio
    height, width = ops.shape(features)[1], ops.shape(features)[2]

    # Feature coordinates in which cell k's centre is at k (hence the -0.5).
    scaled = boxes * float(spatial_scale) - 0.5
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
    if method is None:
        method = "gather" if compat.op_determinism_enabled() else "crop_and_resize"
    if method == "gather":
        crops = bilinear_crops(padded, normalized, box_indices, samples)
    else:
        crops = dispatch.crop_and_resize(padded, normalized, box_indices, samples, portable=bilinear_crops)
    # Average of each bin's ratio x ratio samples; average pooling is the same arithmetic
    # as a mean over a reshaped tensor, and several times faster on CPU.
    pooled = ops.average_pool(crops, ratio, ratio, "valid")
    return ops.cast(pooled, features.dtype)


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
    """Aligned RoIAlign (detectron2 ROIAlign with aligned=True).

    Each of the S x S bins averages `sampling_ratio` x `sampling_ratio` bilinear samples
    taken at the centres of a regular sub-grid of the bin; a sample within one cell
    outside the map takes the border value, farther out it is 0.

    call(features (B, Hf, Wf, C), rois (B, R, 4) xyxy image pixels) -> (B, R, S, S, C)
    """

    def __init__(self, output_size=7, spatial_scale=1.0 / 16, sampling_ratio=2, **kwargs):
        super().__init__(output_size, spatial_scale, **kwargs)
        self.sampling_ratio = _check_size("sampling_ratio", sampling_ratio)

    def call(self, features, rois):
        features = ops.convert_to_tensor(features)
        rois = ops.stop_gradient(ops.cast(rois, "float32"))
        batch, num_rois = ops.shape(rois)[0], ops.shape(rois)[1]
        image_index = ops.repeat(ops.arange(batch, dtype="int32"), num_rois)
        pooled = roi_align_flat(
            features, ops.reshape(rois, (-1, 4)), image_index,
            self.output_size, self.spatial_scale, self.sampling_ratio,
        )
        size = self.output_size
        return ops.reshape(pooled, (batch, num_rois, size, size, ops.shape(features)[-1]))

    def get_config(self):
        config = super().get_config()
        config.update(sampling_ratio=self.sampling_ratio)
        return config


def _c_round(values):
    """Rounds half away from zero like C's round(); tf.round rounds half to even."""
    return tf.sign(values) * tf.floor(tf.abs(values) + 0.5)


def _bin_edges(start, end, size, limit):
    """Caffe RoIPool bin edges along one axis.

    start, end: (B, R) float roi edges in image pixels times spatial_scale.
    Returns (B, R, S) int32 first and one-past-last cell of each bin, within [0, limit].
    """
    first = tf.cast(_c_round(start), tf.int32)
    last = tf.cast(_c_round(end), tf.int32)
    length = tf.maximum(last - first + 1, 1)
    bin_size = tf.cast(length, tf.float32) / float(size)
    index = tf.range(size, dtype=tf.float32)
    lower = tf.cast(tf.floor(index * bin_size[..., None]), tf.int32) + first[..., None]
    upper = tf.cast(tf.math.ceil((index + 1.0) * bin_size[..., None]), tf.int32) + first[..., None]
    return tf.clip_by_value(lower, 0, limit), tf.clip_by_value(upper, 0, limit)


def _floor_log2(values):
    # float64 keeps log2 of integers below 2**40 on the right side of the floor.
    logs = tf.math.log(tf.cast(values, tf.float64)) / tf.math.log(tf.constant(2.0, tf.float64))
    return tf.cast(tf.floor(logs + 1e-9), tf.int32)


def _level_count(levels):
    return tf.maximum(tf.reduce_max(levels), 0) + 1


def _better(values_a, where_a, values_b, where_b):
    """Elementwise max of two (values, flat index) pairs; ties keep `a`."""
    take_b = values_b > values_a
    return tf.where(take_b, values_b, values_a), tf.where(take_b, where_b, where_a)


def _double_windows(values, where, step, axis):
    """Windows twice as long: position p merges itself with p + step (cut at the end)."""
    length = tf.shape(values)[axis]
    ahead = tf.minimum(tf.range(length) + step, length - 1)
    return _better(
        values, where, tf.gather(values, ahead, axis=axis), tf.gather(where, ahead, axis=axis)
    )


def _window_levels(values, where, axis, count):
    """Max and its flat feature index over windows of 2**l along `axis`, stacked (count, ...).

    Entry l at position p covers positions [p, p + 2**l) of the axis, cut at the end.
    """
    value_levels = tf.TensorArray(values.dtype, size=count, element_shape=values.shape)
    where_levels = tf.TensorArray(where.dtype, size=count, element_shape=where.shape)

    def body(level, values, where, value_levels, where_levels):
        value_levels = value_levels.write(level, values)
        where_levels = where_levels.write(level, where)
        values, where = _double_windows(values, where, 2**level, axis)
        return level + 1, values, where, value_levels, where_levels

    loop_vars = (tf.constant(0), values, where, value_levels, where_levels)
    *_, value_levels, where_levels = tf.while_loop(
        lambda level, *_: level < count, body, loop_vars
    )
    return value_levels.stack(), where_levels.stack()


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
        features = tf.convert_to_tensor(features)
        rois = tf.stop_gradient(tf.cast(rois, tf.float32))
        size = self.output_size
        batch, height, width = tf.unstack(tf.shape(features)[:3])
        scaled = rois * self.spatial_scale
        y_lo, y_hi = _bin_edges(scaled[..., 1], scaled[..., 3], size, height)
        x_lo, x_hi = _bin_edges(scaled[..., 0], scaled[..., 2], size, width)
        empty = tf.logical_or((y_hi <= y_lo)[..., :, None], (x_hi <= x_lo)[..., None, :])

        level_y = _floor_log2(tf.maximum(y_hi - y_lo, 1))
        level_x = _floor_log2(tf.maximum(x_hi - x_lo, 1))
        # table[ly, lx, b, y, x] = max of features[b, y:y + 2**ly, x:x + 2**lx], and
        # where[...] the flat index of that max in `features`; only the levels that
        # some bin needs are built.
        flat_index = tf.reshape(tf.range(tf.size(features)), tf.shape(features))
        table, where = _window_levels(
            tf.stop_gradient(features), flat_index, 2, _level_count(level_x)
        )
        table, where = _window_levels(table, where, 2, _level_count(level_y))  # rows
        # Two windows of the largest power-of-two size per axis, flush with each end of
        # the bin, cover it exactly; empty bins are pointed at a valid cell and zeroed.
        y_near = tf.minimum(y_lo, height - 1)
        y_far = tf.maximum(y_hi - 2**level_y, 0)
        x_near = tf.minimum(x_lo, width - 1)
        x_far = tf.maximum(x_hi - 2**level_x, 0)
        target = tf.stack([batch, tf.shape(rois)[1], size, size])
        image = tf.range(batch)[:, None, None, None]

        def lookup(y, x):
            index = [level_y[..., :, None], level_x[..., None, :], image,
                     y[..., :, None], x[..., None, :]]
            index = tf.stack([tf.broadcast_to(i, target) for i in index], axis=-1)
            return tf.gather_nd(table, index), tf.gather_nd(where, index)

        _, best = _better(
            *_better(*lookup(y_near, x_near), *lookup(y_near, x_far)),
            *_better(*lookup(y_far, x_near), *lookup(y_far, x_far)),
        )
        pooled = tf.gather(tf.reshape(features, [-1]), best)
        return tf.where(empty[..., None], tf.zeros([], pooled.dtype), pooled)
