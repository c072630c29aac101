"""The one place in ops/ that picks a backend's own kernel over the keras.ops form.

Every op here has a portable form written in `keras.ops` (ops/nms.py, ops/bilinear.py)
that runs on TensorFlow, JAX and PyTorch with static shapes. Where a backend ships a
kernel that is much faster for the same arithmetic, it is used instead; tests pin each
pair equal (tests/ops/test_dispatch.py):

| op | TensorFlow | PyTorch (eager) | other backends |
| --- | --- | --- | --- |
| greedy NMS, padded | tf.image.non_max_suppression per image | torchvision.ops.nms per image (where torchvision imports) | `nms.greedy_nms_padded` (fori_loop) |
| RoIAlign | tf.image.crop_and_resize, then average pooling | torchvision.ops.roi_align (where torchvision imports; CPU training: gathers) | `bilinear.bilinear_crops` (gathers), then average pooling |
| multi-level RoIAlign | each level pools its own RoIs (dynamic sizes) | as TensorFlow | every level pools every RoI, then a select |
| RoIPool window table | the levels the bins need (while loop) | every level the map allows | every level the map allows |

PyTorch runs eagerly, so its dynamic shapes cost nothing; the portable NMS there is a
Python loop of max_output steps (~25 small ops each), which torchvision's kernel replaces.
`DETECT_TORCHVISION_OPS=0` keeps the portable forms on PyTorch (tests compare both).
TensorFlow and torchvision are imported only when Keras runs on them, so JAX and PyTorch
installs need no TensorFlow.
"""

import functools
import os

import keras


def backend():
    """The Keras backend name: "tensorflow", "jax", "torch" or "numpy"."""
    return keras.backend.backend()


def native_available():
    """True when the running backend has the native kernels of this module."""
    return backend() == "tensorflow"


@functools.lru_cache(maxsize=None)
def torchvision_ops():
    """`torchvision.ops` when Keras runs on PyTorch and torchvision imports beside it
    (and DETECT_TORCHVISION_OPS is not "0"), else None."""
    if backend() != "torch" or os.environ.get("DETECT_TORCHVISION_OPS", "1") == "0":
        return None
    try:
        import torchvision.ops
    except Exception:  # not installed, or built for another torch (its C++ ops fail to load)
        return None
    return torchvision.ops


def _eager_torch(*tensors):
    """The torchvision kernel for these tensors: None when off, or while Keras traces shapes
    on PyTorch's meta device (the portable form gives the shapes there)."""
    ops = torchvision_ops()
    if ops is None or any(getattr(t, "device", None) is not None and t.device.type == "meta" for t in tensors):
        return None
    return ops


def dynamic_shapes(*tensors):
    """True where the backend runs ops with data-dependent shapes cheaply: TensorFlow
    graphs, and PyTorch's eager mode (off its meta device)."""
    if native_available():
        return True
    return backend() == "torch" and not any(
        getattr(t, "device", None) is not None and t.device.type == "meta" for t in tensors
    )


def nms_padded(boxes, scores, max_output, iou_threshold, score_threshold, portable):
    """Greedy NMS per image, (B, max_output) int32 indices padded with -1 and (B,) counts.

    `portable` is the keras.ops form with the same signature, used off TensorFlow.
    """
    tv = _eager_torch(boxes, scores)
    if tv is not None:
        return _torchvision_nms(tv, boxes, scores, int(max_output), iou_threshold, score_threshold)
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


def _torchvision_nms(tv, boxes, scores, max_output, iou_threshold, score_threshold):
    """torchvision.ops.nms per image with the semantics of nms_padded: only scores above
    score_threshold compete, corners are ordered first (TensorFlow's kernel accepts either
    order), equal scores keep the lower index first (torchvision's CPU and CUDA kernels sort
    stably; pinned by tests/ops/test_dispatch.py)."""
    import torch

    with torch.no_grad():
        boxes = boxes.float()
        boxes = torch.cat([torch.minimum(boxes[..., :2], boxes[..., 2:]),
                           torch.maximum(boxes[..., :2], boxes[..., 2:])], dim=-1)
        scores = scores.float()
        batch = scores.shape[0]
        indices = torch.full((batch, max_output), -1, dtype=torch.int32, device=scores.device)
        counts = torch.zeros((batch,), dtype=torch.int32, device=scores.device)
        for image in range(batch):
            candidates = torch.nonzero(scores[image] > score_threshold)[:, 0]
            kept = candidates[tv.nms(boxes[image, candidates], scores[image, candidates], float(iou_threshold))]
            kept = kept[:max_output]
            indices[image, : kept.shape[0]] = kept.to(torch.int32)
            counts[image] = kept.shape[0]
    return indices, counts


def roi_align(features, boxes, box_indices, size, spatial_scale, sampling_ratio, aligned, portable):
    """RoIAlign of X boxes (roi_pool.roi_align_flat's arguments): torchvision.ops.roi_align
    on PyTorch where torchvision imports (NHWC in and out), else `portable()`.

    Not when a gradient flows to CPU features: torchvision's CPU backward is one thread of
    scattered adds, and the portable gathers' backward is faster (the demo's training step on
    2 cores, AMD EPYC: 243 ms with torchvision's RoIAlign, 224 ms with the portable one).
    """
    tv = _eager_torch(features, boxes)
    if tv is None:
        return portable()
    import torch

    if features.device.type == "cpu" and features.requires_grad and torch.is_grad_enabled():
        return portable()

    rois = torch.cat([box_indices.to(boxes.dtype)[:, None], boxes], dim=1)
    pooled = tv.roi_align(features.permute(0, 3, 1, 2).float(), rois, int(size), float(spatial_scale),
                          int(sampling_ratio), bool(aligned))
    return pooled.permute(0, 2, 3, 1)


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
    """Where `dynamic_shapes` holds: for each of `count` levels, the (X_l,) int32 positions
    in `levels` (X,) equal to first_level + l (dynamic sizes, so each level pools only its
    own RoIs); the keras.ops form pools every RoI on every level instead."""
    if not native_available():
        import torch

        return [torch.nonzero(levels == first_level + offset)[:, 0] for offset in range(count)]
    import tensorflow as tf

    return [tf.cast(tf.where(levels == first_level + offset)[:, 0], tf.int32) for offset in range(count)]


def stitch(positions, parts):
    """Rows of `parts` put back at their `positions` (each row once; see level_positions)."""
    if not native_available():
        import torch

        total = sum(int(p.shape[0]) for p in positions)
        merged = parts[0].new_zeros((total,) + tuple(parts[0].shape[1:]))
        return merged.index_put((torch.cat(positions),), torch.cat(parts))
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


def sequential_map(fn, xs, outputs):
    """`fn` over the leading axis of the tuple `xs`, one element at a time (bounded
    memory: R-CNN's CNN on chunks of crops); `outputs`: a tuple of (shape, dtype) of
    what `fn` returns for one element. TensorFlow: tf.map_fn with one iteration in
    flight (its default runs up to 10 at once); elsewhere keras.ops.map."""
    if not native_available():
        return keras.ops.map(fn, xs)
    import tensorflow as tf

    signature = tuple(tf.TensorSpec(shape, dtype) for shape, dtype in outputs)
    return tf.map_fn(fn, xs, fn_output_signature=signature, parallel_iterations=1)


def compact_rows(values, valid):
    """The rows of `values` (N, P, ...) where `valid` (N, P) holds, flattened: (rows (M, ...),
    image index (M,), where). TensorFlow keeps only the valid rows (dynamic M: R-CNN skips
    the CNN on padding proposals); elsewhere all N * P rows (static shapes)."""
    if not native_available():
        n, p = keras.ops.shape(valid)[0], keras.ops.shape(valid)[1]
        rows = keras.ops.reshape(values, (n * p,) + tuple(values.shape[2:]))
        return rows, keras.ops.repeat(keras.ops.arange(n, dtype="int32"), p), None
    import tensorflow as tf

    where = tf.where(valid)
    return tf.gather_nd(values, where), tf.cast(where[:, 0], tf.int32), where


def expand_rows(rows, where, valid):
    """Inverse of `compact_rows`: (M, F) rows back to (N, P, F), zeros where not valid."""
    if where is None:
        n, p = keras.ops.shape(valid)[0], keras.ops.shape(valid)[1]
        expanded = keras.ops.reshape(rows, (n, p, rows.shape[-1]))
        return keras.ops.where(valid[..., None], expanded, keras.ops.zeros((), expanded.dtype))
    import tensorflow as tf

    shape = tf.concat([tf.shape(valid, out_type=tf.int64), tf.shape(rows, out_type=tf.int64)[1:]], axis=0)
    return tf.scatter_nd(where, rows, shape)
