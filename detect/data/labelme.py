"""LabelMe JSON (one file an image) -> Dataset.

A LabelMe file holds `shapes` (each with `label`, `points` [[x, y], ...] in absolute
pixels, `shape_type`), `imagePath` (LabelMe writes it relative to the JSON file's folder;
exporters such as globox write a bare file name), `imageWidth`,
`imageHeight` and `imageData` (the image itself, base64; ignored here: the image is read
from imagePath). A `rectangle` has two opposite corners in any order; a `polygon` is
reduced to its bounding box and counted; other shape types (circle, line, point,
linestrip, mask) are not boxes and are skipped with a count. A polygon is also kept as
its object's mask (detect/data/masks.py); a rectangle has none. A file with no rectangles or
polygons is a negative image. A shape without `shape_type` is a polygon (LabelMe's default).

Image paths: with an image folder (`--images`, `dataset.<split>.images`) the image of
`<annotations>/<sub>/x.json` is looked for at `<images>/<imagePath>`, then
`<images>/<sub>/<imagePath>`, then `<images>/<basename of imagePath>`, and only then
beside the JSON file (`<json folder>/<imagePath>`), the first that exists; file names are
then relative to the image folder. Without one, imagePath is relative to the JSON's folder.
"""

import json
import os

import numpy as np

from detect.data.images import image_size
from detect.data.masks import flat_points
from detect.data.records import Dataset, Record
from detect.errors import DetectError

POLYGONS = "polygons reduced to their bounding box"
SKIPPED = "shapes skipped (circle, line, point, linestrip, mask)"


def load_labelme(annotations, classes=None, images=None):
    """Read a folder of LabelMe JSON files (recursive) or one file into a Dataset.

    Args:
        annotations: a folder (every *.json under it, sorted) or one .json file.
        classes: class names fixing the label order (names no shape uses are kept);
            None: the sorted unique labels.
        images: image folder searched first for each imagePath (module docstring), or None.

    Returns:
        unvalidated Dataset, one Record a JSON file, image ids 1.., file_names relative to
        the image folder when given, else to the annotations folder.
    """
    files, root = _json_files(annotations)
    if images is not None:
        if not os.path.isdir(images):
            raise DetectError(f"image folder not found: {images}")
        images = os.path.abspath(images)
    parsed = [_parse(path, images, root) for path in files]
    root = images or root
    found = sorted({shape[0] for *_, shapes, _ in parsed for shape in shapes})
    classes = list(classes) if classes is not None else found
    label_of = {name: label for label, name in enumerate(classes, start=1)}
    records, counts = [], {POLYGONS: 0, SKIPPED: 0}
    for image_id, (path, image_path, width, height, shapes, skipped) in enumerate(parsed, 1):
        boxes, labels, masks = [], [], []
        for name, box, polygon, index in shapes:
            if name not in label_of:
                raise DetectError(f"{path}: shape {index} has label {name!r}, not in the classes {classes}")
            boxes.append(box)
            labels.append(label_of[name])
            masks.append(polygon)
            counts[POLYGONS] += int(polygon is not None)
        counts[SKIPPED] += skipped
        file_name = os.path.relpath(image_path, root).replace(os.sep, "/")
        has_masks = any(mask is not None for mask in masks)
        records.append(Record(image_id, file_name, image_path, width, height, boxes, labels,
                              masks=masks if has_masks else None))
    return Dataset(classes=classes, records=records, source=os.path.abspath(annotations), notes=counts)


def _json_files(annotations):
    """([JSON paths], root folder names are relative to)."""
    annotations = os.path.abspath(annotations)
    if os.path.isfile(annotations):
        return [annotations], os.path.dirname(annotations)
    if not os.path.isdir(annotations):
        raise DetectError(f"LabelMe folder or file not found: {annotations}")
    files = []
    for folder, dirs, names in os.walk(annotations):
        dirs.sort()
        files += [os.path.join(folder, n) for n in sorted(names) if n.lower().endswith(".json")]
    if not files:
        raise DetectError(f"no LabelMe .json files in {annotations}")
    return files, annotations


def _parse(path, images, root):
    """(json path, image path, width, height, [(label, box xyxy, is polygon, index)], skipped)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as error:
        raise DetectError(f"{path}: invalid JSON at line {error.lineno} column {error.colno}: {error.msg}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DetectError(f"{path}: cannot read: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise DetectError(f"{path}: not a LabelMe file (needs a 'shapes' list)")
    image_path = data.get("imagePath")
    if not isinstance(image_path, str) or not image_path:
        raise DetectError(f"{path}: no imagePath")
    image_path = _resolve_image(path, image_path, images, root)
    width, height = _size(data, image_path, path)
    shapes, skipped = [], 0
    for index, shape in enumerate(data["shapes"]):
        parsed = _shape(shape, index, path)
        if parsed is None:
            skipped += 1
        else:
            shapes.append(parsed)
    return path, image_path, width, height, shapes, skipped


def _resolve_image(path, image_path, images, root):
    """The image of the JSON file at `path` (order in the module docstring); the first
    candidate when none exists, so the error names the image folder's path."""
    # Files saved on Windows use backslashes.
    image_path = image_path.replace("\\", "/")
    beside = os.path.normpath(os.path.join(os.path.dirname(path), image_path))
    if images is None:
        return beside
    sub = os.path.relpath(os.path.dirname(path), root)
    candidates = [os.path.join(images, image_path), os.path.join(images, sub, image_path),
                  os.path.join(images, os.path.basename(image_path)), beside]
    candidates = [os.path.normpath(candidate) for candidate in candidates]
    return next((candidate for candidate in candidates if os.path.isfile(candidate)), candidates[0])


def _size(data, image_path, path):
    """(width, height) from imageWidth/imageHeight, else from the image header."""
    width, height = data.get("imageWidth"), data.get("imageHeight")
    if width is None or height is None:
        return image_size(image_path)
    try:
        return int(width), int(height)
    except (TypeError, ValueError):
        raise DetectError(f"{path}: imageWidth/imageHeight must be integers") from None


def _shape(shape, index, path):
    """(label, (4,) xyxy, polygon [x1, y1, ...] or None for a rectangle, index), or None for a
    shape that is not a box."""
    if not isinstance(shape, dict):
        raise DetectError(f"{path}: shape {index} is not an object")
    kind = shape.get("shape_type") or "polygon"
    if kind not in ("rectangle", "polygon"):
        return None
    name = str(shape.get("label", "")).strip()
    if not name:
        raise DetectError(f"{path}: shape {index} has no label")
    try:
        points = np.array(shape.get("points"), np.float64).reshape(-1, 2)
    except (TypeError, ValueError):
        raise DetectError(f"{path}: shape {index} ({name}): points must be [[x, y], ...]") from None
    needed = 2 if kind == "rectangle" else 3
    if len(points) < needed:
        raise DetectError(f"{path}: shape {index} ({name}): a {kind} needs at least {needed} points")
    box = np.concatenate([points.min(axis=0), points.max(axis=0)]).astype(np.float32)
    return name, box, [flat_points(points)] if kind == "polygon" else None, index
