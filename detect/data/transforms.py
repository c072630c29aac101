"""Image + box transforms as TF functions (usable inside tf.data and tf.function).

Boxes are (G, 4) xyxy in pixels of the image they come with.
"""

import tensorflow as tf

# The canvas rules need no TensorFlow (canvas.py); re-exported here, where the pipeline finds them.
from detect.data.canvas import RESIZE_RULES, canvases, is_portrait, per_image_canvas  # noqa: F401


def resize_scale(height, width, min_size, max_size, canvas_size=None):
    """Scale factor for "shorter side to min_size, longer side at most max_size".

    With a canvas (canvas_h, canvas_w) the image must also fit inside it.
    """
    height = tf.cast(height, tf.float32)
    width = tf.cast(width, tf.float32)
    short = tf.minimum(height, width)
    long = tf.maximum(height, width)
    scale = tf.minimum(min_size / short, max_size / long)
    if canvas_size is not None:
        scale = tf.minimum(scale, tf.minimum(canvas_size[0] / height, canvas_size[1] / width))
    return scale


def resized_shape(height, width, min_size, max_size, canvas_size=None):
    """(new_height, new_width) int32 after resize_scale, at least 1 pixel each."""
    scale = resize_scale(height, width, min_size, max_size, canvas_size)
    new_h = tf.maximum(tf.cast(tf.round(tf.cast(height, tf.float32) * scale), tf.int32), 1)
    new_w = tf.maximum(tf.cast(tf.round(tf.cast(width, tf.float32) * scale), tf.int32), 1)
    if canvas_size is not None:
        new_h = tf.minimum(new_h, canvas_size[0])
        new_w = tf.minimum(new_w, canvas_size[1])
    return new_h, new_w


def torchvision_resized_shape(height, width, min_size, max_size):
    """(new_height, new_width) int32 as torchvision's GeneralizedRCNNTransform resizes: the
    scale min(min_size / short, max_size / long) and floor(side * scale), in float64 as
    Python computes them (300 x 451 at 800 / 1333: 2.6666666666666665 -> 800 x 1202)."""
    height = tf.cast(height, tf.float64)
    width = tf.cast(width, tf.float64)
    scale = tf.minimum(float(min_size) / tf.minimum(height, width), float(max_size) / tf.maximum(height, width))
    new_h = tf.maximum(tf.cast(tf.floor(height * scale), tf.int32), 1)
    new_w = tf.maximum(tf.cast(tf.floor(width * scale), tf.int32), 1)
    return new_h, new_w


def resize(image, boxes, min_size, max_size, canvas_size=None, rule="detect"):
    """Resize a (H, W, 3) image and its boxes; returns image float32, boxes, (sy, sx).

    The per-axis scales (sy, sx) are new/old sizes after rounding, so boxes map exactly
    onto the resized pixels. rule "detect": sizes rounded, antialiased when shrinking;
    "torchvision": torchvision_resized_shape and plain bilinear (half-pixel centres, no
    antialiasing), as torch's interpolate(mode="bilinear", align_corners=False).
    """
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    if rule == "torchvision":
        new_h, new_w = torchvision_resized_shape(height, width, min_size, max_size)
    else:
        new_h, new_w = resized_shape(height, width, min_size, max_size, canvas_size)
    # The resize kernel reads uint8 itself (the same float32 result as casting first), so a
    # large photo is never held as a float32 copy (4 bytes a channel) before shrinking.
    resized = tf.image.resize(image, [new_h, new_w], method="bilinear", antialias=rule != "torchvision")
    resized = tf.cast(resized, tf.float32)
    sy = tf.cast(new_h, tf.float32) / tf.cast(height, tf.float32)
    sx = tf.cast(new_w, tf.float32) / tf.cast(width, tf.float32)
    boxes = boxes * tf.stack([sx, sy, sx, sy])
    return resized, boxes, tf.stack([sy, sx])


def horizontal_flip(image, boxes):
    """Mirror a (H, W, C) image and its boxes: x1' = W - x2, x2' = W - x1."""
    width = tf.cast(tf.shape(image)[1], boxes.dtype)
    flipped = tf.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], axis=1)
    return tf.reverse(image, axis=[1]), flipped


def pad_to_canvas(image, canvas_size, pad_value=0.0):
    """Place a (H, W, C) float image at the top-left of a (canvas_h, canvas_w, C) canvas.

    pad_value: scalar or (C,) colour of the padding in raw pixels; the backbone's mean
    colour makes the padding zero after its normalization.
    """
    value = tf.cast(tf.convert_to_tensor(pad_value), image.dtype)
    padded = tf.image.pad_to_bounding_box(image - value, 0, 0, canvas_size[0], canvas_size[1])
    return padded + value


def pad_to_orientation_canvas(image, landscape, portrait, pad_value=0.0):
    """`pad_to_canvas` onto the canvas of the (H, W, C) image's orientation: `portrait`
    where it is portrait (`is_portrait`), else `landscape`; one canvas when they are equal."""
    if landscape == portrait:
        return tf.ensure_shape(pad_to_canvas(image, landscape, pad_value), [*landscape, image.shape[-1]])
    content = tf.shape(image)[:2]
    return tf.cond(
        is_portrait(content[0], content[1]),
        lambda: pad_to_canvas(image, portrait, pad_value),
        lambda: pad_to_canvas(image, landscape, pad_value),
    )


def pad_boxes(boxes, labels, max_boxes):
    """Pad (or truncate) boxes/labels to max_boxes rows; padding rows: box 0, label -1."""
    boxes = boxes[:max_boxes]
    labels = labels[:max_boxes]
    extra = max_boxes - tf.shape(boxes)[0]
    boxes = tf.pad(boxes, [[0, extra], [0, 0]])
    labels = tf.pad(labels, [[0, extra]], constant_values=-1)
    return tf.ensure_shape(boxes, [max_boxes, 4]), tf.ensure_shape(labels, [max_boxes])
