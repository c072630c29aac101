"""Draw detections onto an image: one rectangle and one "name 0.93" tag per box.

Colours come from a fixed palette (matplotlib's tab20, dark shades first, so neighbouring
class ids get different hues); class k always has `class_color(k)`. Colours are RGB, as
are the images throughout `detect`.
"""

import cv2
import numpy as np
from matplotlib import colormaps

_TAB20 = colormaps["tab20"].colors
PALETTE = tuple(
    tuple(int(round(255 * channel)) for channel in _TAB20[index])
    for index in list(range(0, 20, 2)) + list(range(1, 20, 2))
)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def class_color(label):
    """RGB colour (3 ints 0..255) of class `label` (1..K); the palette repeats after 20."""
    return PALETTE[(int(label) - 1) % len(PALETTE)]


def draw_detections(image, boxes, labels, class_names=None, scores=None, thickness=None, colors=None):
    """Return a copy of `image` with the detections drawn; `image` is not modified.

    Args:
        image: (H, W, 3) uint8 RGB.
        boxes: (N, 4) xyxy in pixels of `image` (continuous edges: x2 is one past the last
            column). Boxes partly outside the image are drawn clipped to it.
        labels: (N,) int class ids 1..K; rows with labels < 1 (padding -1, background 0)
            and rows with non-finite boxes are skipped.
        class_names: list of K names, label k -> class_names[k - 1]; None or a missing
            entry shows the number.
        scores: (N,) floats shown with two decimals, or None for names only.
        thickness: line width in pixels; None picks one from the image size.
        colors: (N, 3) RGB ints, one colour a box (e.g. one for ground truth, another for
            detections), or None for the class colours.

    Returns:
        (H, W, 3) uint8 RGB image.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    canvas = np.ascontiguousarray(image).copy()
    height, width = canvas.shape[:2]
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    score_values = None if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(labels) != len(boxes) or (score_values is not None and len(score_values) != len(boxes)):
        raise ValueError(
            f"boxes, labels and scores must have the same length, got {len(boxes)}, "
            f"{len(labels)}, {None if score_values is None else len(score_values)}"
        )
    if thickness is None:
        thickness = max(1, int(round((height + width) / 600)))
    if colors is None:
        colors = [class_color(label) for label in labels]
    colors = [tuple(int(c) for c in color) for color in colors]
    if len(colors) != len(boxes):
        raise ValueError(f"colors must have one entry a box: {len(colors)} for {len(boxes)} boxes")
    keep = (labels >= 1) & np.isfinite(boxes).all(axis=1)
    if score_values is not None:
        # Highest scores are drawn last, so their tags stay on top.
        order = [i for i in np.argsort(score_values, kind="stable") if keep[i]]
    else:
        order = list(np.flatnonzero(keep))

    corners = {}
    for i in order:
        corner = _pixel_corners(boxes[i], width, height)
        if corner is not None:
            corners[i] = corner
            cv2.rectangle(canvas, corner[:2], corner[2:], colors[i], thickness)
    for i in order:
        if i in corners:
            score = None if score_values is None else score_values[i]
            text = _tag_text(labels[i], class_names, score)
            _draw_tag(canvas, corners[i], text, colors[i])
    return canvas


def _pixel_corners(box, width, height):
    """Inclusive pixel corners (x0, y0, x1, y1) of an xyxy box clipped to the image."""
    x1, y1, x2, y2 = box
    left = int(np.clip(np.floor(x1), 0, width - 1))
    top = int(np.clip(np.floor(y1), 0, height - 1))
    right = int(np.clip(np.ceil(x2) - 1, 0, width - 1))
    bottom = int(np.clip(np.ceil(y2) - 1, 0, height - 1))
    if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height or right < left or bottom < top:
        return None
    return left, top, right, bottom


def _tag_text(label, class_names, score):
    if class_names is not None and 1 <= label <= len(class_names):
        name = str(class_names[label - 1])
    else:
        name = str(int(label))
    return name if score is None else f"{name} {score:.2f}"


def _draw_tag(canvas, corners, text, color):
    """Filled tag with the text, above the box's top-left corner or inside if no room."""
    height, width = canvas.shape[:2]
    scale = max(0.3, min(height, width) / 800)
    weight = max(1, int(round(scale * 1.5)))
    (text_w, text_h), baseline = cv2.getTextSize(text, _FONT, scale, weight)
    tag_h = text_h + baseline + 2
    left, top = corners[0], corners[1]
    tag_top = top - tag_h if top - tag_h >= 0 else top
    tag_left = max(0, min(left, width - text_w - 2))
    cv2.rectangle(canvas, (tag_left, tag_top), (tag_left + text_w + 1, tag_top + tag_h - 1),
                  color, cv2.FILLED)
    # Black or white text, whichever reads better on the class colour (Rec. 601 luma).
    luma = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    text_color = (0, 0, 0) if luma > 128 else (255, 255, 255)
    cv2.putText(canvas, text, (tag_left + 1, tag_top + text_h + 1), _FONT, scale,
                text_color, weight, cv2.LINE_AA)
