"""Instance masks in the data: one compact segmentation per object, COCO's two forms.

A Record's `masks` is None (a boxes-only dataset) or a list with one entry per box:
  - polygons: a list of flat [x1, y1, x2, y2, ...] lists in absolute pixels of the image
    (continuous coordinates, as COCO, LabelMe and CVAT write them), at least 3 points each;
  - RLE: {"size": [height, width], "counts": str} (COCO compressed run-length encoding,
    column-major, as pycocotools writes it); uncompressed RLE (counts a list of ints) is
    compressed on reading;
  - None: this object has no mask (e.g. a LabelMe rectangle); it takes no part in the mask
    loss and is scored by its box alone.
Decoding is pycocotools' (mask.frPyObjects / decode / merge / area / toBbox): its
rasterisation of a polygon is the one COCO's segm AP uses, pinned by tests/data/test_masks.py.
Masks are decoded only where pixels are needed: in the pipeline (at the canvas size, see
data/pipeline.py) and for drawing.
"""

import numpy as np
from pycocotools import mask as mask_utils

from detect.errors import DetectError


def check_segmentation(segmentation, height, width, where):
    """The compact form of one COCO `segmentation` value, checked; DetectError naming `where`.

    Args:
      segmentation: polygons (list of flat coordinate lists) or an RLE dict, compressed or not.
      height, width: the image's size (an RLE's `size` must equal it).
      where: how the message names the annotation (a string, or a function returning one).
    Returns:
      polygons as lists of floats, or a compressed RLE {"size": [h, w], "counts": str}.
    """
    if isinstance(segmentation, dict):
        return _check_rle(segmentation, height, width, where)
    if not isinstance(segmentation, (list, tuple)) or not segmentation:
        raise DetectError(f"{_text(where)}: segmentation must be a list of polygons or an RLE dict, "
                          f"got {_short(segmentation)}")
    polygons = []
    for index, polygon in enumerate(segmentation):
        if not isinstance(polygon, (list, tuple)) or not all(_is_number(v) for v in polygon):
            raise DetectError(f"{_text(where)}: polygon {index} must be a flat list of numbers [x1, y1, x2, y2, ...]")
        if len(polygon) % 2 or len(polygon) < 6:
            raise DetectError(f"{_text(where)}: polygon {index} needs at least 3 points (6 numbers, an even count), "
                              f"got {len(polygon)} numbers")
        values = [float(v) for v in polygon]
        if not all(np.isfinite(values)):
            raise DetectError(f"{_text(where)}: polygon {index} has a NaN or infinite coordinate")
        polygons.append(values)
    return polygons


def _check_rle(rle, height, width, where):
    size, counts = rle.get("size"), rle.get("counts")
    if not isinstance(size, (list, tuple)) or len(size) != 2 or not all(_is_number(v) for v in size):
        raise DetectError(f"{_text(where)}: RLE needs 'size' [height, width], got {_short(size)}")
    if [int(size[0]), int(size[1])] != [int(height), int(width)]:
        raise DetectError(f"{_text(where)}: RLE size {list(size)} (height, width) disagrees with the "
                          f"{width}x{height} (WxH) image")
    h, w = int(size[0]), int(size[1])
    if isinstance(counts, list):
        if not all(_is_number(v) and v >= 0 for v in counts) or sum(counts) != h * w:
            raise DetectError(f"{_text(where)}: uncompressed RLE counts must be non-negative and sum to "
                              f"{h} * {w} = {h * w} pixels")
        counts = mask_utils.frPyObjects({"size": [h, w], "counts": [int(v) for v in counts]}, h, w)["counts"]
    elif isinstance(counts, bytes):
        pass
    elif isinstance(counts, str):
        counts = counts.encode("ascii")
    else:
        raise DetectError(f"{_text(where)}: RLE counts must be a string or a list of ints, got {_short(counts)}")
    rle = {"size": [h, w], "counts": counts}
    try:
        total = int(mask_utils.area(rle)) if h * w else 0
    except Exception:  # noqa: BLE001 - pycocotools raises plain exceptions on corrupt strings
        raise DetectError(f"{_text(where)}: RLE counts are not a valid COCO RLE string") from None
    if total > h * w:
        raise DetectError(f"{_text(where)}: RLE counts are not a valid COCO RLE string")
    return {"size": [h, w], "counts": counts.decode("ascii")}


def to_rle(segmentation, height, width):
    """Compressed RLE {"size": [h, w], "counts": bytes} (pycocotools' form) of a compact mask."""
    if isinstance(segmentation, dict):
        counts = segmentation["counts"]
        return {"size": list(segmentation["size"]), "counts": counts.encode("ascii") if isinstance(counts, str)
                else counts}
    rles = mask_utils.frPyObjects([list(p) for p in segmentation], int(height), int(width))
    return mask_utils.merge(rles)


def decode(segmentation, height, width):
    """(height, width) uint8 0/1 mask of a compact mask (None: all zeros)."""
    if segmentation is None:
        return np.zeros((int(height), int(width)), np.uint8)
    return mask_utils.decode(to_rle(segmentation, height, width))


def decode_many(segmentations, height, width):
    """(G, height, width) uint8 masks and (G,) bool has-a-mask of a list of compact masks."""
    out = np.zeros((len(segmentations), int(height), int(width)), np.uint8)
    valid = np.zeros((len(segmentations),), bool)
    for index, segmentation in enumerate(segmentations):
        if segmentation is not None:
            out[index] = decode(segmentation, height, width)
            valid[index] = True
    return out, valid


def encode(binary):
    """COCO compressed RLE {"size": [h, w], "counts": str} (JSON-ready) of an (H, W) 0/1 mask."""
    rle = mask_utils.encode(np.asfortranarray(np.asarray(binary, np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def area(segmentation, height, width):
    """Pixels of a compact mask (pycocotools' area: polygons rasterised as segm AP does)."""
    return int(mask_utils.area(to_rle(segmentation, height, width)))


def bbox(segmentation, height, width):
    """(4,) float32 xyxy tight box of a compact mask (pycocotools' toBbox, COCO xywh -> xyxy)."""
    x, y, w, h = mask_utils.toBbox(to_rle(segmentation, height, width))
    return np.array([x, y, x + w, y + h], np.float32)


def polygons_of(segmentation, height, width, min_points=3):
    """Polygons (flat pixel lists) of a compact mask: polygons as they are, an RLE traced by
    its outer contours (cv2.findContours), for writers that take polygons
    (YOLO segmentation labels). An empty mask gives []."""
    if not isinstance(segmentation, dict):
        return [list(p) for p in segmentation]
    import cv2

    binary = decode(segmentation, height, width)
    # Traced on the mask upsampled 2x: the outline runs through the centres of the border
    # half-pixels, a quarter pixel inside the edge, so pycocotools' rasterisation of the
    # polygon gives back the same pixels along straight runs (exactly for rectangles).
    fine = np.repeat(np.repeat(binary, 2, axis=0), 2, axis=1)
    contours, _ = cv2.findContours(fine, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        points = (contour.reshape(-1, 2).astype(np.float64) + 0.5) / 2.0
        if len(points) >= min_points:
            polygons.append([float(v) for v in points.reshape(-1)])
    return polygons


def flat_points(points):
    """[[x, y], ...] (LabelMe, CVAT) -> one flat polygon (wrap it in a list for a compact mask) [x1, y1, x2, y2, ...] of floats."""
    return [float(v) for v in np.asarray(points, np.float64).reshape(-1)]


def _is_number(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _text(where):
    return where() if callable(where) else where


def _short(value, limit=80):
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
