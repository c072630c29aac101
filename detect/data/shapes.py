"""Synthetic shapes dataset in COCO format: the embedded default for demos and tests.

Each image holds up to `max_shapes` circles, rectangles and triangles in flat colours on a
varied background (noise, gradients, low-frequency blotches, stripes), so a detector has
to learn the outlines rather than a colour. Shape masks come from
`skimage.draw.random_shapes`, one shape a call; shapes never overlap and keep at least one
pixel of background between them. Boxes are the tight boxes of the drawn masks in the
internal convention (xyxy, continuous edges: a shape covering columns 3..7 has x1=3, x2=8),
not skimage's requested regions, which are looser for triangles.

Layout written by `generate_shapes(out_dir)`:

    out_dir/images/train/000001.jpg ...      out_dir/annotations/train.json
    out_dir/images/val/000007.jpg ...        out_dir/annotations/val.json

COCO `file_name`s are relative to `out_dir/images` ("train/000001.jpg"); `bbox` is
`[x, y, w, h]` in float pixels; `area` is the box area `w * h` (as for any boxes-only
dataset, so COCO's small/medium/large ranges mean the same across data formats). With
`masks=True` (`detect data shapes --masks`) each annotation also has the shape's exact
pixel mask as `segmentation`, COCO compressed RLE; images and boxes stay the same bytes.
"""

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from skimage.draw import random_shapes
from tqdm import tqdm

from detect.errors import DetectError

CLASS_NAMES = ("circle", "rectangle", "triangle")
JPEG_QUALITY = 95
_MIN_CONTRAST = 100.0  # Euclidean RGB distance between a shape and the background under it
_PLACEMENT_TRIALS = 20


def render_image(rng, image_size=128, max_shapes=4, *, plain=False, return_masks=False):
    """Draw one synthetic image with its exact boxes (and masks).

    Args:
        rng: `numpy.random.Generator`; the only source of randomness.
        image_size: side of the square image in pixels (>= 16).
        max_shapes: draws 1..max_shapes shapes (fewer if they do not fit); 0 draws a
            negative image with no shapes.
        plain: white background and no noise, so every non-white pixel is a shape pixel.
        return_masks: also return the shapes' exact pixel masks (the same draws: the image
            and boxes do not change).

    Returns:
        image: (S, S, 3) uint8 RGB.
        boxes: (N, 4) float32 xyxy, each the tight box of its shape's pixels.
        labels: (N,) int32 in 1..3, indexing `CLASS_NAMES` from 1.
        masks (with return_masks): list of N (S, S) bool masks, one a shape.
    """
    size = int(image_size)
    count = int(rng.integers(1, max_shapes + 1)) if max_shapes > 0 else 0
    masks, labels = _place_shapes(rng, size, count)
    if plain:
        canvas = np.full((size, size, 3), 255.0, dtype=np.float32)
    else:
        canvas = _BACKGROUNDS[int(rng.integers(len(_BACKGROUNDS)))](rng, size)
    for mask in masks:
        canvas[mask] = _contrasting_colour(rng, canvas[mask].mean(axis=0))
    if not plain:
        canvas += rng.normal(0.0, rng.uniform(2.0, 8.0), canvas.shape).astype(np.float32)
    image = np.clip(np.round(canvas), 0, 255).astype(np.uint8)
    boxes = np.array([_tight_box(mask) for mask in masks], dtype=np.float32).reshape(-1, 4)
    if return_masks:
        return image, boxes, np.asarray(labels, dtype=np.int32), masks
    return image, boxes, np.asarray(labels, dtype=np.int32)


def generate_shapes(
    out_dir,
    num_images=1000,
    image_size=128,
    seed=0,
    val_fraction=0.2,
    negative_fraction=0.03,
    max_shapes=4,
    *,
    progress=True,
    masks=False,
):
    """Write the synthetic shapes dataset (layout in the module docstring).

    masks: also write each shape's exact pixel mask as the annotation's `segmentation`
    (COCO compressed RLE); the images and boxes are the same bytes as without.

    The output depends only on the arguments: the same seed gives byte-identical JPEGs
    and JSON. `round(num_images * negative_fraction)` images have no shapes; the val split
    holds `round(num_images * val_fraction)` images (at least one when the fraction is
    positive and there are two or more images).

    Returns:
        dict with "out_dir", "images_dir" (str paths), "annotations" {split: json path},
        "num_images", "num_objects", "num_negatives" ({split: int} each) and
        "categories" (list of class names, ids 1..3 in that order).
    """
    _check_arguments(num_images, image_size, seed, val_fraction, negative_fraction, max_shapes)

    def render(rng, negative):
        return render_image(rng, int(image_size), 0 if negative else max_shapes, return_masks=masks)

    return write_dataset(out_dir, render, CLASS_NAMES, num_images, image_size, seed, val_fraction,
                         negative_fraction, progress=progress)


def write_dataset(out_dir, render, class_names, num_images, image_size, seed, val_fraction, negative_fraction,
                  *, progress=True):
    """Render and write a synthetic COCO dataset (layout in the module docstring).

    render(rng, negative) -> (image (S, S, 3) uint8, boxes (N, 4) xyxy, labels (N,) 1..K[,
    masks: N (S, S) bool]); with masks each annotation gets its `segmentation` as COCO
    compressed RLE. Image i draws only from a generator seeded by (seed, i). Returns the
    summary dict of `generate_shapes`.
    """
    num_images, image_size, seed = int(num_images), int(image_size), int(seed)
    root = Path(out_dir)
    images_dir = root / "images"
    for sub in (images_dir / "train", images_dir / "val", root / "annotations"):
        sub.mkdir(parents=True, exist_ok=True)

    # Spawned children make image i depend on (seed, i) only, not on num_images.
    split_seed, *image_seeds = np.random.SeedSequence(seed).spawn(num_images + 1)
    is_val, is_negative = _assign(np.random.default_rng(split_seed), num_images,
                                  val_fraction, negative_fraction)
    coco = {split: _empty_coco(class_names) for split in ("train", "val")}
    stats = {key: {"train": 0, "val": 0} for key in ("num_images", "num_objects", "num_negatives")}
    for index in tqdm(range(num_images), desc="shapes", unit="img", disable=not progress):
        split = "val" if is_val[index] else "train"
        image, boxes, labels, *masks = render(np.random.default_rng(image_seeds[index]), bool(is_negative[index]))
        image_id = index + 1
        file_name = f"{split}/{image_id:06d}.jpg"
        Image.fromarray(image).save(
            images_dir / file_name, format="JPEG", quality=JPEG_QUALITY, subsampling=0
        )
        _add_to_coco(coco[split], image_id, file_name, image_size, boxes, labels, masks[0] if masks else None)
        stats["num_images"][split] += 1
        stats["num_objects"][split] += len(boxes)
        stats["num_negatives"][split] += int(len(boxes) == 0)

    annotations = {}
    for split, content in coco.items():
        path = root / "annotations" / f"{split}.json"
        path.write_text(json.dumps(content), encoding="utf-8")
        annotations[split] = str(path)
    return {
        "out_dir": str(root),
        "images_dir": str(images_dir),
        "annotations": annotations,
        **stats,
        "categories": list(class_names),
    }


def _check_arguments(num_images, image_size, seed, val_fraction, negative_fraction, max_shapes):
    def whole(value, low):
        return int(value) == value and value >= low

    checks = [
        (whole(num_images, 1), f"num_images must be >= 1, got {num_images}"),
        (whole(image_size, 16), f"image_size must be >= 16 pixels, got {image_size}"),
        (whole(seed, 0), f"seed must be a non-negative integer, got {seed}"),
        (0.0 <= val_fraction < 1.0, f"val_fraction must be in [0, 1), got {val_fraction}"),
        (0.0 <= negative_fraction <= 1.0,
         f"negative_fraction must be in [0, 1], got {negative_fraction}"),
        (whole(max_shapes, 1), f"max_shapes must be >= 1, got {max_shapes}"),
    ]
    for ok, message in checks:
        if not ok:
            raise DetectError(message)


def _assign(rng, num_images, val_fraction, negative_fraction):
    """Boolean (num_images,) masks: which images go to val, which are negatives."""
    num_val = int(round(num_images * val_fraction))
    if val_fraction > 0 and num_images >= 2:
        num_val = min(max(num_val, 1), num_images - 1)
    is_val = np.zeros(num_images, dtype=bool)
    is_val[rng.permutation(num_images)[:num_val]] = True
    is_negative = np.zeros(num_images, dtype=bool)
    is_negative[rng.permutation(num_images)[: int(round(num_images * negative_fraction))]] = True
    return is_val, is_negative


def _empty_coco(class_names=CLASS_NAMES):
    return {
        "info": {"description": "detect synthetic shapes"},
        "images": [],
        "annotations": [],
        "categories": [
            {"id": k, "name": name, "supercategory": "shape"}
            for k, name in enumerate(class_names, start=1)
        ],
    }


def _add_to_coco(coco, image_id, file_name, image_size, boxes, labels, masks=None):
    coco["images"].append(
        {"id": image_id, "file_name": file_name, "width": image_size, "height": image_size}
    )
    for index, ((x1, y1, x2, y2), label) in enumerate(zip(boxes.tolist(), labels.tolist())):
        width, height = x2 - x1, y2 - y1
        if masks is not None:
            from detect.data.masks import encode

            coco["annotations"].append({
                "id": len(coco["annotations"]) + 1, "image_id": image_id, "category_id": int(label),
                "bbox": [x1, y1, width, height], "area": width * height, "iscrowd": 0,
                "segmentation": encode(masks[index]),
            })
            continue
        coco["annotations"].append({
            "id": len(coco["annotations"]) + 1,
            "image_id": image_id,
            "category_id": int(label),
            "bbox": [x1, y1, width, height],
            "area": width * height,
            "iscrowd": 0,
        })


def _place_shapes(rng, size, count):
    """Up to `count` non-touching shape masks ((S, S) bool each) and their labels 1..3."""
    min_size = max(2, size // 8)
    max_size = max(min_size + 1, size // 2)
    occupied = np.zeros((size, size), dtype=np.uint8)
    masks, labels = [], []
    with warnings.catch_warnings():
        # random_shapes warns when a shape does not fit; the retry loop handles that.
        warnings.simplefilter("ignore")
        for _ in range(count):
            label = int(rng.integers(len(CLASS_NAMES))) + 1
            # A one-pixel ring around placed shapes keeps neighbours apart in the pixels.
            blocked = cv2.dilate(occupied, np.ones((3, 3), np.uint8)).astype(bool)
            for _ in range(_PLACEMENT_TRIALS):
                drawn, regions = random_shapes(
                    (size, size), max_shapes=1, min_shapes=1, min_size=min_size,
                    max_size=max_size, shape=CLASS_NAMES[label - 1], intensity_range=(0, 0),
                    allow_overlap=False, num_trials=10, rng=rng, channel_axis=None,
                )
                mask = drawn == 0
                if _inside(regions, size) and mask.any() and not (mask & blocked).any():
                    masks.append(mask)
                    labels.append(label)
                    occupied[mask] = 1
                    break
    return masks, labels


def _inside(regions, size):
    """True when random_shapes drew one shape whose requested region lies in the image.

    skimage clips a triangle whose apex would be above the top row instead of refusing
    it; such a cut-off triangle is rejected rather than labelled a triangle.
    """
    if len(regions) != 1:
        return False
    (r0, r1), (c0, c1) = regions[0][1]
    return 0 <= r0 < r1 <= size and 0 <= c0 < c1 <= size


def _tight_box(mask):
    """[x1, y1, x2, y2] continuous edges of the True pixels of an (H, W) mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]


def _contrasting_colour(rng, background_rgb):
    """A random RGB colour far from `background_rgb`; the farthest of 8 draws otherwise."""
    candidates = rng.integers(0, 256, size=(8, 3)).astype(np.float32)
    distances = np.linalg.norm(candidates - background_rgb, axis=1)
    good = np.flatnonzero(distances >= _MIN_CONTRAST)
    return candidates[good[0] if len(good) else int(np.argmax(distances))]


def _random_colour(rng):
    return rng.integers(0, 256, size=3).astype(np.float32)


def _noise_background(rng, size):
    base = np.broadcast_to(_random_colour(rng), (size, size, 3))
    return base + rng.normal(0.0, rng.uniform(10.0, 30.0), (size, size, 3)).astype(np.float32)


def _ramp(rng, size):
    """(S, S) float32 in [0, 1] rising along a random direction."""
    angle = rng.uniform(0.0, 2.0 * np.pi)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    ramp = xs * np.cos(angle) + ys * np.sin(angle)
    return (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)


def _gradient_background(rng, size):
    start, end = _random_colour(rng), _random_colour(rng)
    t = _ramp(rng, size)[..., None]
    return start * (1.0 - t) + end * t


def _blotch_background(rng, size):
    grid = int(rng.integers(2, 7))
    coarse = rng.uniform(0.0, 255.0, size=(grid, grid, 3)).astype(np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


def _stripe_background(rng, size):
    first, second = _random_colour(rng), _random_colour(rng)
    period = rng.uniform(size / 16.0, size / 4.0)
    phase = _ramp(rng, size) * size / period + rng.uniform(0.0, 1.0)
    t = (0.5 + 0.5 * np.sin(2.0 * np.pi * phase))[..., None]
    return first * (1.0 - t) + second * t


_BACKGROUNDS = (_noise_background, _gradient_background, _blotch_background, _stripe_background)
