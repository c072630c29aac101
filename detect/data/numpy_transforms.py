"""transforms.py's image + box transforms in NumPy, for the PyDataset input path (no TensorFlow).

The same rules as the TensorFlow functions, pinned equal to them by tests
(tests/data/test_numpy_transforms.py): sizes from the same float32 (rule "detect") or
float64 (rule "torchvision") arithmetic and rounding, bilinear resampling with half-pixel
centres, antialiased when shrinking under the "detect" rule (a triangle filter widened by
the shrink factor: PIL's BILINEAR, which is what tf.image.resize(antialias=True) computes).
Boxes are (G, 4) xyxy in pixels of the image they come with.
"""

import cv2
import numpy as np
from PIL import Image

from detect.data.canvas import RESIZE_RULES, canvases, is_portrait, per_image_canvas  # noqa: F401 - shared


def resized_shape(height, width, min_size, max_size, canvas_size=None):
    """(new_height, new_width) as transforms.resized_shape: float32 scale, round half to even."""
    h, w = np.float32(height), np.float32(width)
    scale = np.minimum(np.float32(min_size) / np.minimum(h, w), np.float32(max_size) / np.maximum(h, w))
    if canvas_size is not None:
        scale = np.minimum(scale, np.minimum(np.float32(canvas_size[0]) / h, np.float32(canvas_size[1]) / w))
    new_h = max(int(np.round(h * np.float32(scale))), 1)
    new_w = max(int(np.round(w * np.float32(scale))), 1)
    if canvas_size is not None:
        new_h, new_w = min(new_h, int(canvas_size[0])), min(new_w, int(canvas_size[1]))
    return new_h, new_w


def torchvision_resized_shape(height, width, min_size, max_size):
    """(new_height, new_width) as transforms.torchvision_resized_shape (float64, floor)."""
    scale = min(float(min_size) / min(height, width), float(max_size) / max(height, width))
    return max(int(np.floor(height * scale)), 1), max(int(np.floor(width * scale)), 1)


def content_shape(height, width, min_size, max_size, canvas_size=None, rule="detect"):
    """The resized (height, width) of a height x width image under a resize rule."""
    if rule == "torchvision":
        return torchvision_resized_shape(height, width, min_size, max_size)
    return resized_shape(height, width, min_size, max_size, canvas_size)


def resample(image, new_h, new_w, antialias=True):
    """(H, W, C) image -> (new_h, new_w, C) float32, bilinear with half-pixel centres.

    antialias: when shrinking, the triangle filter is widened by the shrink factor (PIL's
    BILINEAR, per channel in 32-bit float mode); otherwise OpenCV's INTER_LINEAR (the
    plain interpolation tf.image.resize and torch's interpolate compute)."""
    image = np.asarray(image)
    height, width = image.shape[:2]
    channels = image.shape[2] if image.ndim == 3 else 1
    if (new_h, new_w) == (height, width):
        return image.astype(np.float32).reshape(new_h, new_w, channels)
    if antialias and (new_h < height or new_w < width):
        planes = [np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c] if image.ndim == 3 else image,
                                                                  dtype=np.float32), mode="F")
                             .resize((new_w, new_h), Image.BILINEAR)) for c in range(channels)]
        return np.stack(planes, axis=-1).astype(np.float32, copy=False)
    out = np.empty((new_h, new_w, channels), np.float32)
    # OpenCV resizes at most 512 channels at a time.
    for start in range(0, channels, 512):
        part = np.ascontiguousarray(image.reshape(height, width, channels)[..., start:start + 512], np.float32)
        resized = cv2.resize(part, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        out[..., start:start + 512] = resized.reshape(new_h, new_w, -1)
    return out


def resize(image, boxes, min_size, max_size, canvas_size=None, rule="detect"):
    """transforms.resize in NumPy: (image float32, boxes, (sy, sx) float32)."""
    height, width = image.shape[:2]
    new_h, new_w = content_shape(height, width, min_size, max_size, canvas_size, rule)
    resized = resample(image, new_h, new_w, antialias=rule != "torchvision")
    scale = np.array([np.float32(new_h) / np.float32(height), np.float32(new_w) / np.float32(width)], np.float32)
    sy, sx = scale
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4) * np.array([sx, sy, sx, sy], np.float32)
    return resized, boxes, scale


def resize_masks(masks, new_h, new_w):
    """(G, H, W) 0/1 masks -> (G, new_h, new_w) uint8: plain bilinear, then >= 0.5 (as the
    tf.data pipeline resizes them)."""
    masks = np.asarray(masks)
    if masks.shape[0] == 0:
        return np.zeros((0, new_h, new_w), np.uint8)
    planes = resample(np.moveaxis(masks, 0, -1), new_h, new_w, antialias=False)
    return np.moveaxis(planes >= 0.5, -1, 0).astype(np.uint8)


def flip_boxes(boxes, width):
    """(G, 4) boxes mirrored in an image `width` pixels wide: x1' = W - x2, x2' = W - x1."""
    width = np.float32(width)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], axis=1)


def horizontal_flip(image, boxes):
    """Mirror a (H, W, C) image and its boxes (flip_boxes)."""
    return image[:, ::-1], flip_boxes(boxes, image.shape[1])


def pad_to_canvas(image, canvas_size, pad_value=0.0):
    """Place a (H, W, C) image at the top-left of a (canvas_h, canvas_w, C) float32 canvas
    filled with pad_value (scalar or (C,) raw pixels)."""
    height, width = image.shape[:2]
    if height > canvas_size[0] or width > canvas_size[1]:
        raise ValueError(f"a {height}x{width} image does not fit the {canvas_size[0]}x{canvas_size[1]} canvas")
    out = np.empty((int(canvas_size[0]), int(canvas_size[1]), image.shape[2]), np.float32)
    out[...] = np.asarray(pad_value, np.float32)
    out[:height, :width] = image
    return out


def pad_boxes(boxes, labels, max_boxes):
    """Pad (or truncate) boxes/labels to max_boxes rows; padding rows: box 0, label -1."""
    boxes_out = np.zeros((max_boxes, 4), np.float32)
    labels_out = np.full((max_boxes,), -1, np.int32)
    n = min(len(boxes), max_boxes)
    boxes_out[:n] = np.asarray(boxes, np.float32)[:n]
    labels_out[:n] = np.asarray(labels, np.int32)[:n]
    return boxes_out, labels_out


def prepare_image(image, *, min_size, max_size, canvas_size=None, pad_value=0.0, canvas=None):
    """pipeline.prepare_image in NumPy: one (H, W, 3) image -> model inputs with a batch
    dimension of 1 (images, image_shape, scale), on the canvas of its orientation or on an
    explicit canvas_size that also bounds the resize."""
    empty = np.zeros((0, 4), np.float32)
    if canvas_size is None:
        resized, _, scale = resize(image, empty, min_size, max_size)
        landscape, portrait = canvases(min_size, max_size, canvas)
        target = portrait if is_portrait(*resized.shape[:2]) else landscape
    else:
        resized, _, scale = resize(image, empty, min_size, max_size, canvas_size)
        target = canvas_size
    return {
        "images": pad_to_canvas(resized, target, pad_value)[None],
        "image_shape": np.array(resized.shape[:2], np.int32)[None],
        "scale": scale[None],
    }
