"""Mask R-CNN outputs at inference: pasted into the image, drawn, written as COCO RLE.

The model returns `masks` (N, D, 2S, 2S) probabilities of the detected class inside each
detection's box (detect.models.mask_rcnn); here they become (D, H, W) bool masks of the
original image (detect.ops.masks.paste_masks, threshold 0.5 by default: the model's
mask_head.threshold) and COCO compressed RLE for the JSON outputs.
"""

import cv2
import numpy as np

from detect.data.masks import encode
from detect.inference.draw import class_color
from detect.ops.masks import paste_masks


def original_size(image_shape, scale):
    """(height, width) ints of the original image of model inputs: the content (h, w) of
    the canvas over the resize scale (sy, sx), which the resize defines as new / old size."""
    return tuple(int(round(float(c) / float(s))) for c, s in zip(image_shape, scale))


def mask_threshold(model, default=0.5):
    """The pasting threshold of a Mask R-CNN model (its mask head's), else `default`."""
    head = getattr(model, "mask_head", None)
    return float(head.threshold) if head is not None else default


def mask_paste(model, default="detectron2"):
    """The pasting rule of a Mask R-CNN model (its mask head's), else `default`."""
    head = getattr(model, "mask_head", None)
    return getattr(head, "paste", default) if head is not None else default


def image_masks(masks, boxes, height, width, threshold=0.5, paste="detectron2"):
    """(D, height, width) bool masks of one image from its (D, 2S, 2S) mask probabilities
    and (D, 4) xyxy boxes in its pixels (`paste`: detect.ops.masks.paste_masks' rule)."""
    return paste_masks(np.asarray(masks), np.asarray(boxes), height, width, threshold, paste)


def to_rle(binary_masks):
    """COCO compressed RLE dicts (JSON-ready, counts a str) of (D, H, W) bool masks."""
    return [encode(mask) for mask in binary_masks]


def draw_masks(image, masks, labels, alpha=0.45, colors=None):
    """A copy of the (H, W, 3) uint8 RGB image with each (H, W) bool mask filled in its class
    colour (translucent, `alpha`) and outlined (1 px, opaque); labels (D,) 1..K."""
    canvas = np.ascontiguousarray(image).copy()
    masks = np.asarray(masks, bool).reshape(-1, *canvas.shape[:2])
    for index, (mask, label) in enumerate(zip(masks, np.asarray(labels).reshape(-1))):
        if label < 1 or not mask.any():
            continue
        color = np.array(colors[index] if colors is not None else class_color(label), np.float32)
        canvas[mask] = np.round(canvas[mask] * (1 - alpha) + color * alpha).astype(np.uint8)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(canvas, contours, -1, tuple(int(c) for c in color), 1)
    return canvas
