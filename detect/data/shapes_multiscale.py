"""The `multiscale` preset of the synthetic shapes set: objects of every COCO size range.

Each 320 x 320 image holds 2..20 shapes of 5 classes (circle, rectangle, triangle,
ellipse, cross) whose box side is drawn log-uniformly in 6..200 pixels, so COCO small
(area < 32^2, about half the objects), medium (32^2..96^2) and large (> 96^2) all occur.
Shapes may overlap: a new shape may cover at most 40% of any earlier shape's still visible
pixels, and its box IoU with every earlier box stays below 0.6. The box of a shape is the
tight box of all its pixels (hidden ones included). Backgrounds are crops of the
photographs and textures shipped with scikit-image (skimage.data, read from the package,
no download), or the procedural ones of the default preset. Shapes are filled with a
colour far from the background under them, shaded by a gradient, then the whole image
gets sensor noise. A `negative_fraction` of the images have no shapes.

Everything depends on (seed, image index) only: `detect data shapes --preset multiscale
--seed S` writes the same bytes each time.
"""

import functools

import cv2
import numpy as np

from detect.data.shapes import _BACKGROUNDS, _contrasting_colour, _ramp, _tight_box, write_dataset

CLASS_NAMES = ("circle", "rectangle", "triangle", "ellipse", "cross")
DEFAULTS = {"num_images": 1200, "image_size": 320, "negative_fraction": 0.03}
MIN_SIDE, MAX_SIDE = 6.0, 200.0
MIN_COUNT, MAX_COUNT = 2, 20
_MAX_COVER = 0.4  # of an earlier shape's visible pixels a new shape may hide
_MAX_BOX_IOU = 0.6
_TRIALS = 20
# Photographs and textures of skimage.data that ship inside the package.
_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
           "camera", "brick", "grass", "gravel", "moon", "coins")


@functools.lru_cache(maxsize=None)
def _photo(name):
    """(H, W, 3) float32 RGB of one skimage.data image."""
    import skimage.data

    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3]).astype(np.float32)


def _photo_background(rng, size):
    """A random square crop (30..100% of the shorter side) of a photograph, resized."""
    image = _photo(_PHOTOS[int(rng.integers(len(_PHOTOS)))])
    height, width = image.shape[:2]
    side = int(min(height, width) * rng.uniform(0.3, 1.0))
    y = int(rng.integers(0, height - side + 1))
    x = int(rng.integers(0, width - side + 1))
    crop = image[y:y + side, x:x + side]
    if rng.uniform() < 0.5:
        crop = crop[:, ::-1]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if side > size else cv2.INTER_LINEAR)


def _shape_mask(rng, size, label, side):
    """(S, S) bool mask of one shape whose box side is about `side`, fully inside."""
    aspect = rng.uniform(0.5, 2.0) if label in (2, 4) else 1.0  # rectangle, ellipse
    w = max(int(round(side * np.sqrt(aspect))), 3)
    h = max(int(round(side / np.sqrt(aspect))), 3)
    w, h = min(w, size - 2), min(h, size - 2)
    x0 = int(rng.integers(0, size - w))
    y0 = int(rng.integers(0, size - h))
    mask = np.zeros((size, size), np.uint8)
    x1, y1 = x0 + w - 1, y0 + h - 1
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    if label == 1:
        cv2.circle(mask, (int(round(cx)), int(round(cy))), max((min(w, h) - 1) // 2, 1), 1, -1)
    elif label == 2:
        cv2.rectangle(mask, (x0, y0), (x1, y1), 1, -1)
    elif label == 3:
        apex = x0 + int(rng.integers(0, w))
        cv2.fillPoly(mask, [np.array([[apex, y0], [x0, y1], [x1, y1]], np.int32)], 1)
    elif label == 4:
        cv2.ellipse(mask, (int(round(cx)), int(round(cy))), (max((w - 1) // 2, 1), max((h - 1) // 2, 1)),
                    0, 0, 360, 1, -1)
    else:
        bar = max(int(round(min(w, h) * rng.uniform(0.25, 0.4))), 1)
        cv2.rectangle(mask, (x0, int(cy - bar / 2)), (x1, int(cy + bar / 2)), 1, -1)
        cv2.rectangle(mask, (int(cx - bar / 2), y0), (int(cx + bar / 2), y1), 1, -1)
    return mask.astype(bool)


def _box_iou(box, boxes):
    if not boxes:
        return np.zeros(0)
    boxes = np.asarray(boxes, np.float64)
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / (area(np.asarray(box, np.float64)) + area(boxes) - inter)


def _acceptable(mask, box, visible, boxes):
    """No earlier shape loses more than _MAX_COVER of its visible pixels, boxes stay apart."""
    if (_box_iou(box, boxes) >= _MAX_BOX_IOU).any():
        return False
    return all((seen & mask).sum() <= _MAX_COVER * seen.sum() for seen in visible)


def _place(rng, size, count):
    """Masks (drawing order), labels and boxes of up to `count` shapes."""
    masks, labels, boxes, visible = [], [], [], []
    for _ in range(count):
        label = int(rng.integers(len(CLASS_NAMES))) + 1
        for _ in range(_TRIALS):
            side = float(np.exp(rng.uniform(np.log(MIN_SIDE), np.log(MAX_SIDE))))
            mask = _shape_mask(rng, size, label, side)
            if not mask.any():
                continue
            box = _tight_box(mask)
            if _acceptable(mask, box, visible, boxes):
                visible = [seen & ~mask for seen in visible] + [mask.copy()]
                masks.append(mask)
                labels.append(label)
                boxes.append(box)
                break
    return masks, labels, boxes


def render_multiscale(rng, image_size=320, negative=False, return_masks=False):
    """One multiscale image: (image (S, S, 3) uint8 RGB, boxes (N, 4) float32 xyxy tight
    boxes, labels (N,) int32 in 1..5 indexing CLASS_NAMES from 1[, masks]). With
    return_masks also the N (S, S) bool masks of each shape's visible pixels (the parts
    later shapes cover are not in it, as in COCO; its box stays the box of all its pixels)."""
    size = int(image_size)
    if rng.uniform() < 0.6:
        canvas = _photo_background(rng, size)
    else:
        canvas = _BACKGROUNDS[int(rng.integers(len(_BACKGROUNDS)))](rng, size).astype(np.float32)
    count = 0 if negative else int(rng.integers(MIN_COUNT, MAX_COUNT + 1))
    masks, labels, boxes = _place(rng, size, count)
    for mask in masks:
        colour = _contrasting_colour(rng, canvas[mask].mean(axis=0))
        shade = 1.0 + rng.uniform(-0.25, 0.25) * (_ramp(rng, size)[mask][:, None] - 0.5)
        canvas[mask] = colour * shade
    canvas += rng.normal(0.0, rng.uniform(2.0, 8.0), canvas.shape).astype(np.float32)
    image = np.clip(np.round(canvas), 0, 255).astype(np.uint8)
    boxes, labels = np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int32)
    if return_masks:
        visible, covered = [], np.zeros((size, size), bool)
        for mask in masks[::-1]:  # a later shape is drawn over an earlier one
            visible.append(mask & ~covered)
            covered |= mask
        return image, boxes, labels, visible[::-1]
    return image, boxes, labels


def generate_multiscale(out_dir, num_images=DEFAULTS["num_images"], image_size=DEFAULTS["image_size"], seed=0,
                        val_fraction=0.2, negative_fraction=DEFAULTS["negative_fraction"], *, progress=True,
                        masks=False):
    """Write the multiscale set (layout and return value as detect.data.shapes.generate_shapes;
    masks: each shape's visible pixels as its COCO RLE `segmentation`)."""
    from detect.data.shapes import _check_arguments

    _check_arguments(num_images, image_size, seed, val_fraction, negative_fraction, MAX_COUNT)

    def render(rng, negative):
        return render_multiscale(rng, image_size, negative, return_masks=masks)

    return write_dataset(out_dir, render, CLASS_NAMES, num_images, image_size, seed, val_fraction,
                         negative_fraction, progress=progress)
