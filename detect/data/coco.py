"""COCO detection JSON -> Dataset.

COCO boxes are [x, y, w, h] in absolute pixels with continuous edges, so xyxy is
[x, y, x + w, y + h]. Category ids may be any integers (COCO itself uses 1..90 with gaps);
they are mapped to labels 1..K in ascending id order, and Dataset.category_ids maps back.
An annotation's `segmentation` (polygons, compressed or uncompressed RLE, crowd or not)
becomes its Record mask (detect/data/masks.py); an empty or missing one means no mask.
"""

import json
import logging
import math
import numbers
import os

import numpy as np

from detect.data.images import image_size
from detect.data.masks import check_segmentation
from detect.data.records import Dataset, Record
from detect.errors import DetectError

logger = logging.getLogger(__name__)


def load_coco(annotations_path, images_dir=None):
    """Read a COCO json into an unvalidated Dataset.

    Args:
        annotations_path: the COCO json file.
        images_dir: folder the image file_names are relative to. None: the json's folder,
            or <json dir>/../images when the image is found there instead.

    Returns:
        Dataset with one Record per entry of "images" (in file order; images without
        annotations are kept as negatives); crowd annotations are kept with iscrowd=True.
    """
    data = _read_json(annotations_path)
    categories = category_table(data["categories"], annotations_path)
    category_ids = sorted(categories)
    label_of = {cat_id: label for label, cat_id in enumerate(category_ids, start=1)}
    images = _images(data["images"], annotations_path, images_dir)

    per_image = {image_id: [] for image_id in images}
    for index, ann in enumerate(data["annotations"]):
        image_id, row = _annotation(ann, index, annotations_path, images, label_of)
        per_image[image_id].append(row)

    records = [Record.from_objects(image_id, *image, per_image[image_id]) for image_id, image in images.items()]
    return Dataset(
        classes=[categories[c] for c in category_ids],
        records=records,
        category_ids=category_ids,
        source=os.path.abspath(annotations_path),
    )


def _read_json(path):
    if not os.path.isfile(path):
        raise DetectError(f"COCO annotation file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as error:
        raise DetectError(
            f"{path}: invalid JSON at line {error.lineno} column {error.colno}: {error.msg}"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise DetectError(f"{path}: cannot read: {error}") from None
    if not isinstance(data, dict):
        raise DetectError(f"{path}: expected a JSON object with images/annotations/categories")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DetectError(f"{path}: missing key {key!r}")
        if not isinstance(data[key], list):
            raise DetectError(f"{path}: {key!r} must be a list")
    return data


def _is_number(value):
    """A JSON number (int or float, NumPy scalars too), not a bool and not a string."""
    # json gives int and float: checked first, an ABC check costs ten times more.
    return type(value) in (int, float) or (isinstance(value, numbers.Real) and not isinstance(value, bool))


def _is_int(value):
    return type(value) is int or (isinstance(value, numbers.Integral) and not isinstance(value, bool))


def category_table(entries, path):
    """{category id: name} of a COCO "categories" list; the one rule for every command.

    Ids are integers, names non-empty strings, both unique: a duplicate name is an error
    naming both ids (merging them would silently pool two classes' counts).
    """
    categories, id_of = {}, {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not _is_int(entry.get("id")) or not isinstance(entry.get("name"), str) \
                or not entry["name"].strip():
            raise DetectError(f"{path}: categories[{index}] needs an integer 'id' and a non-empty 'name', "
                              f"got {entry!r}")
        cat_id, name = int(entry["id"]), entry["name"]
        if cat_id in categories:
            raise DetectError(f"{path}: duplicate category id {cat_id}")
        if name in id_of:
            raise DetectError(f"{path}: category name '{name}' is used by ids {id_of[name]} and {cat_id}")
        categories[cat_id], id_of[name] = name, cat_id
    return categories


def annotation_where(path, ann, index):
    """How messages name an annotation: `PATH: annotation id 7 (entry 6)`."""
    if isinstance(ann, dict) and "id" in ann:
        return f"{path}: annotation id {ann['id']!r} (entry {index})"
    return f"{path}: annotation entry {index}"


def annotation_values(ann, where):
    """(bbox [x, y, w, h] floats, iscrowd, difficult) of one annotation, types checked;
    `where` names it in errors (a string, or a function returning one).

    bbox holds 4 finite numbers (not strings: `"10"` is an error, as pycocotools would
    fail on it); iscrowd and difficult are absent or the number 0 or 1 (`"0"` is an error:
    as a truthy string it would turn every box into a crowd region).
    """
    bbox = ann.get("bbox")
    if not isinstance(bbox, (list, tuple, np.ndarray)) or len(bbox) != 4 \
            or not all(_is_number(v) and math.isfinite(v) for v in bbox):
        raise DetectError(f"{_text(where)} needs a bbox of 4 numbers [x, y, w, h], got {_short(bbox)}")
    flags = []
    for key in ("iscrowd", "difficult"):
        value = ann.get(key, 0)
        if not _is_number(value) or value not in (0, 1):
            raise DetectError(f"{_text(where)}: {key} must be the number 0 or 1, got {_short(value)}")
        flags.append(bool(value))
    return [float(v) for v in bbox], flags[0], flags[1]


def _text(where):
    # `where` may be a function: the message is built only when there is an error.
    return where() if callable(where) else where


def _short(value, limit=80):
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _images(entries, path, images_dir):
    """{image id: (file_name, absolute path, width, height)} in file order."""
    json_dir = os.path.dirname(os.path.abspath(path))
    images = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not _is_int(entry.get("id")) or not isinstance(entry.get("file_name"), str):
            raise DetectError(
                f"{path}: image entry {index} needs an integer 'id' and a 'file_name' string, got {_short(entry)}"
            )
        image_id, file_name = int(entry["id"]), entry["file_name"]
        if image_id in images:
            raise DetectError(f"{path}: duplicate image id {image_id} ({file_name})")
        image_path = _resolve(file_name, images_dir, json_dir)
        width, height = _size(entry, image_path, path)
        images[image_id] = (file_name, image_path, width, height)
    return images


def _resolve(file_name, images_dir, json_dir):
    if images_dir is not None:
        return os.path.abspath(os.path.join(images_dir, file_name))
    beside = os.path.join(json_dir, file_name)
    sibling = os.path.join(json_dir, os.pardir, "images", file_name)
    if not os.path.exists(beside) and os.path.exists(sibling):
        return os.path.abspath(sibling)
    return os.path.abspath(beside)


def _size(entry, image_path, path):
    """(width, height) from the entry, else from the image header with a warning."""
    if "width" in entry and "height" in entry:
        width, height = entry["width"], entry["height"]
        if not (_is_number(width) and _is_number(height) and width == int(width) and height == int(height)
                and width > 0 and height > 0):
            raise DetectError(
                f"{path}: image id {entry.get('id')!r} ({entry.get('file_name')}): width and height must be "
                f"positive integers, got {width!r} x {height!r}"
            )
        return int(width), int(height)
    logger.warning("%s: image %s has no width/height; reading the image header",
                   path, entry.get("file_name"))
    return image_size(image_path)


def _annotation(ann, index, path, images, label_of):
    """(image_id, (box xyxy, label, iscrowd, difficult)) for one annotation dict."""
    if not isinstance(ann, dict):
        raise DetectError(f"{annotation_where(path, ann, index)} is not an object")
    image_id = ann.get("image_id")
    if not _is_int(image_id) or image_id not in images:
        raise DetectError(f"{annotation_where(path, ann, index)} refers to unknown image_id {image_id!r}")
    cat_id = ann.get("category_id")
    if not _is_int(cat_id) or cat_id not in label_of:
        raise DetectError(f"{annotation_where(path, ann, index)} has unknown category_id {cat_id!r}")
    (x, y, w, h), iscrowd, difficult = annotation_values(ann, lambda: annotation_where(path, ann, index))
    box = np.array([x, y, x + w, y + h], np.float32)
    segmentation = ann.get("segmentation")
    if segmentation is None or (isinstance(segmentation, list) and not segmentation):
        # No mask (boxes-only files often write "segmentation": []).
        return image_id, (box, label_of[cat_id], iscrowd, difficult)
    _, _, width, height = images[image_id]
    mask = check_segmentation(segmentation, height, width, lambda: annotation_where(path, ann, index))
    return image_id, (box, label_of[cat_id], iscrowd, difficult, mask)
