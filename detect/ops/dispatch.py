"""The one place in ops/ that picks a backend's own kernel over the keras.ops form.

Every op here has a portable form written in `keras.ops` (ops/nms.py, ops/bilinear.py)
that runs on TensorFlow, JAX and PyTorch with static shapes. Where a backend ships a
kernel that is much faster for the same arithmetic, it is used instead; tests pin each
pair equal (tests/ops/test_dispatch.py):

| op | TensorFlow | other backends |
| --- | --- | --- |
| greedy NMS, padded | tf.image.non_max_suppression per image | `nms.greedy_nms_padded` (fori_loop) |
| bilinear crops | tf.image.crop_and_resize | `bilinear.bilinear_crops` (gathers) |
| multi-level RoIAlign | each level pools its own RoIs (dynamic sizes) | every level pools every RoI, then a select |
| RoIPool window table | the levels the bins need (while loop) | every level the map allows |

TensorFlow is imported only when Keras runs on it, so JAX and PyTorch installs need no
TensorFlow.
"""

import keras


def backend():
    """The Keras backend name: "tensorflow", "jax", "torch" or "numpy"."""
    return keras.backend.backend()


def native_available():
    """True when the running backend has the native kernels of this module."""
    return backend() == "tensorflow"


def nms_padded(boxes, scores, max_output, iou_threshold, score_threshold, portable):
    """Greedy NMS per image, (B, max_output) int32 indices padded with -1 and (B,) counts.

    `portable` is the keras.ops form with the same signature, used off TensorFlow.
    """
    if not native_available():
        return portable(boxes, scores, max_output, iou_threshold, score_threshold)
    import tensorflow as tf

    max_output = int(max_output)
    # On CPU a loop of the exact single-image kernel is 1.2-5x faster than the batched
    # tiled tf.image.non_max_suppression_padded for max_output <= 1000 (B 1..8, N 2k..12k)
    # and at most ~2x slower at 2000; the tiled one also drops boxes whose coordinates
    # are all <= 0 and fails when N == 0.
    def one_image(inputs):
        image_boxes, image_scores = inputs
        kept = tf.image.non_max_suppression(image_boxes, image_scores, max_output, iou_threshold, score_threshold)
        valid = tf.size(kept)
        return tf.pad(kept, [[0, max_output - valid]], constant_values=-1), valid

    return tf.map_fn(
        one_image, (boxes, scores),
        fn_output_signature=(tf.TensorSpec([max_output], tf.int32), tf.TensorSpec([], tf.int32)),
    )


def crop_and_resize(images, boxes, box_indices, size, portable):
    """tf.image.crop_and_resize(images, boxes, box_indices, [size, size]) with extrapolation
    value 0, or `portable` (same signature) off TensorFlow or when `portable` is forced
    by the caller (op determinism, see roi_pool.py)."""
    if not native_available():
        return portable(images, boxes, box_indices, size)
    import tensorflow as tf

    return tf.image.crop_and_resize(
        images, boxes, keras.ops.cast(box_indices, "int32"), [size, size], extrapolation_value=0.0
    )


def level_positions(levels, first_level, count):
    """TensorFlow only: for each of `count` levels, the (X_l,) int32 positions in
    `levels` (X,) equal to first_level + l (dynamic sizes, so each level pools only its
    own RoIs); the keras.ops form pools every RoI on every level instead."""
    import tensorflow as tf

    return [tf.cast(tf.where(levels == first_level + offset)[:, 0], tf.int32) for offset in range(count)]


def stitch(positions, parts):
    """TensorFlow only: rows of `parts` put back at their `positions` (each row once)."""
    import tensorflow as tf

    return tf.dynamic_stitch(positions, parts)


def window_levels(values, where, axis, levels, static_count, double):
    """RoIPool's table of maxima over windows of 2**l cells along `axis`, l = 0, 1, ...,
    stacked on a new first axis with their flat indices: (L, ...) values and where.

    `double(values, where, step, axis)` turns windows of `step` cells into windows of
    2 * step. TensorFlow builds only the levels that `levels` (the level each bin needs)
    reaches, in a while loop of dynamic length; elsewhere all `static_count` levels the
    axis allows are built (static shapes, more memory on large maps).
    """
    if not native_available():
        value_levels, where_levels = [values], [where]
        for level in range(1, static_count):
            values, where = double(values, where, 2 ** (level - 1), axis)
            value_levels.append(values)
            where_levels.append(where)
        return keras.ops.stack(value_levels), keras.ops.stack(where_levels)
    import tensorflow as tf

    count = tf.maximum(tf.reduce_max(levels), 0) + 1
    value_levels = tf.TensorArray(values.dtype, size=count, element_shape=values.shape)
    where_levels = tf.TensorArray(where.dtype, size=count, element_shape=where.shape)

    def body(level, values, where, value_levels, where_levels):
        value_levels = value_levels.write(level, values)
        where_levels = where_levels.write(level, where)
        values, where = double(values, where, 2**level, axis)
        return level + 1, values, where, value_levels, where_levels

    loop_vars = (tf.constant(0), values, where, value_levels, where_levels)
    *_, value_levels, where_levels = tf.while_loop(lambda level, *_: level < count, body, loop_vars)
    return value_levels.stack(), where_levels.stack()
