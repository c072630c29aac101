"""Galleries: the images where each kind of error hurts most, drawn for a person to look at.

For every error type of `errors.error_breakdown` the images are ranked by their worst error
of that type: detection errors by score (a confident false positive costs the most AP),
missed objects by box area (a missed large object is the most glaring). Each picture shows
all ground truth in green ("gt circle"), the detections with score >= `score_threshold` in
orange ("circle 0.87"), and the error boxes of the gallery's type in magenta ("Loc 0.87",
"Miss circle"). Images are RGB throughout; files are JPEGs written atomically.
"""

import os

import cv2
import numpy as np

from detect.data.images import read_image
from detect.inference.draw import draw_detections
from detect.io import atomic_write

GT_COLOR = (0, 170, 0)
DET_COLOR = (255, 140, 0)
ERROR_COLOR = (230, 0, 200)

GALLERIES = {
    "Bkg": "Background: confident detections where there is no object",
    "Loc": "Localization: right class, box off the object (IoU 0.1-0.5)",
    "Cls": "Classification: box on an object of another class",
    "Miss": "Missed objects, largest first",
    "Dupe": "Duplicates: a second detection of an object already found",
    "Both": "Both: wrong class and poorly placed",
}


def worst_images(errors, kind, limit=6):
    """[(image_id, [error records of `kind` in that image]), ...] for the `limit` images whose
    worst `kind` error ranks highest (score for detection errors, area for Miss)."""
    key = "area" if kind == "Miss" else "score"
    by_image = {}
    for error in errors:
        if error["type"] == kind:
            by_image.setdefault(error["image_id"], []).append(error)
    ranked = sorted(by_image.items(), key=lambda item: -max(e[key] for e in item[1]))
    return ranked[:limit]


def _xyxy(xywh):
    boxes = np.asarray(xywh, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


def gallery_scale(height, width, min_side=320, max_side=1024):
    """The factor a gallery picture is drawn at: small images enlarged to `min_side` on
    their shorter side (tags stay legible), large photos shrunk to `max_side` on their
    longer side (a report of 48 twelve-megapixel JPEGs would weigh 100+ MB)."""
    if max(height, width) > max_side:
        return max_side / max(height, width)
    return max(1.0, min_side / max(1, min(height, width)))


def draw_error_image(image, gt_anns, detections, errors, names, score_threshold=0.3, min_side=320,
                     max_side=1024):
    """The picture of one gallery entry.

    image: (H, W, 3) uint8 RGB; gt_anns: COCO annotations of the image; detections: COCO
    results of the image; errors: the error records shown highlighted; names: {category
    id: name}. Drawn at `gallery_scale` (boxes and tags after resizing, so their lines
    keep their width). Returns (H', W', 3) uint8 RGB.
    """
    scale = gallery_scale(*image.shape[:2], min_side=min_side, max_side=max_side)
    if scale != 1:
        size = (max(1, int(round(image.shape[1] * scale))), max(1, int(round(image.shape[0] * scale))))
        image = cv2.resize(image, size, interpolation=cv2.INTER_NEAREST if scale > 1 else cv2.INTER_AREA)
    shown = [d for d in detections if d["score"] >= score_threshold]
    layers = (  # drawn in this order, so the error boxes end on top
        ([a["bbox"] for a in gt_anns], [f"gt {names[a['category_id']]}" for a in gt_anns], GT_COLOR, 2),
        ([d["bbox"] for d in shown], [f"{names[d['category_id']]} {d['score']:.2f}" for d in shown], DET_COLOR, 2),
        ([e["bbox"] for e in errors], [_error_tag(e, names) for e in errors], ERROR_COLOR, 3),
    )
    canvas = image
    for boxes, tags, color, thickness in layers:
        if boxes:
            # One label a box, so each tag can carry its own text.
            canvas = draw_detections(canvas, _xyxy(boxes) * scale, np.arange(1, len(boxes) + 1), tags,
                                     thickness=thickness, colors=[color] * len(boxes))
    return canvas


def write_galleries(gt, detections, errors, image_paths, out_dir, limit=6, score_threshold=0.3):
    """Draw the worst images of every error type into `out_dir` (JPEG files).

    gt: COCO gt dict; detections: COCO results; errors: `error_breakdown(...)["_errors"]`;
    image_paths: {image_id: path of the image file}; images without a path are skipped.
    Returns {type: [{"path": file path, "image_id", "caption"}]} for the types with errors,
    in GALLERIES order. Raises DetectError when an image file cannot be read.
    """
    names = {c["id"]: c["name"] for c in gt["categories"]}
    anns, dets = {}, {}
    for ann in gt["annotations"]:
        anns.setdefault(ann["image_id"], []).append(ann)
    for det in detections:
        dets.setdefault(det["image_id"], []).append(det)
    files = {image["id"]: image.get("file_name", str(image["id"])) for image in gt["images"]}
    galleries = {}
    for kind in GALLERIES:
        entries = []
        for rank, (image_id, image_errors) in enumerate(worst_images(
                [e for e in errors if e["image_id"] in image_paths], kind, limit)):
            picture = draw_error_image(read_image(image_paths[image_id]), anns.get(image_id, []),
                                       dets.get(image_id, []), image_errors, names, score_threshold)
            path = os.path.join(out_dir, f"{kind.lower()}_{rank + 1}.jpg")
            ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR),
                                       [cv2.IMWRITE_JPEG_QUALITY, 88])
            with atomic_write(path, "wb") as f:
                f.write(encoded.tobytes())
            entries.append({"path": path, "image_id": image_id,
                            "caption": f"{files.get(image_id, image_id)}: " + _caption(image_errors, names)})
        if entries:
            galleries[kind] = entries
    return galleries


def _error_tag(error, names):
    if error["type"] == "Miss":
        return f"Miss {names[error['class']]}"
    if error["type"] == "Cls":
        return f"Cls {names[error['class']]} (gt {names[error['fix_class']]}) {error['score']:.2f}"
    return f"{error['type']} {names[error['class']]} {error['score']:.2f}"


def _caption(errors, names):
    parts = []
    for error in sorted(errors, key=lambda e: -e.get("score", e.get("area", 0))):
        if error["type"] == "Miss":
            parts.append(f"missed {names[error['class']]} ({error['area']:.0f} px²)")
        else:
            parts.append(f"{names[error['class']]} {error['score']:.2f}")
    return ", ".join(parts[:4]) + (" ..." if len(parts) > 4 else "")
