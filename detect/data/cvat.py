"""CVAT for images 1.1 XML -> Dataset.

Layout (CVAT's documentation, "CVAT for images" export):

    <annotations>
      <version>1.1</version>
      <meta><task> ... <labels><label><name>car</name>...</label>...</labels> ... </task></meta>
      <image id="0" name="folder/x.jpg" width="640" height="480">
        <box label="car" occluded="0" xtl="10.5" ytl="20" xbr="110" ybr="70.25" z_order="0"/>
        <polygon label="car" occluded="0" points="1,2;30,4;20,40"/>
      </image>
    </annotations>

Box corners are absolute pixels with continuous edges (xyxy as given). A box with a
`rotation` (degrees, about its centre) becomes the axis-aligned box around the rotated one;
a polygon becomes its bounding box (and its object's mask, detect/data/masks.py); both are counted, as are occluded boxes (kept as
ordinary objects). Other shapes (polyline, points, ellipse, mask, skeleton) are skipped
with a count. The `<labels>` list in `<meta>` (task, job or project) is the class list
when present, so classes no box uses are kept; else the sorted unique labels.
"""

import math
import os
import xml.etree.ElementTree as ET

import numpy as np

from detect.data.masks import flat_points
from detect.data.records import Dataset, Record
from detect.errors import DetectError

POLYGONS = "polygons reduced to their bounding box"
ROTATED = "rotated boxes replaced by their axis-aligned bounding box"
OCCLUDED = "occluded boxes (kept)"
SKIPPED = "shapes skipped (polyline, points, ellipse, mask, skeleton)"
_OTHER_SHAPES = ("polyline", "points", "ellipse", "mask", "skeleton", "cuboid", "tag")


def load_cvat(path, images_dir=None, classes=None):
    """Read a CVAT for images 1.1 XML file into an unvalidated Dataset.

    Args:
        path: the annotations.xml.
        images_dir: folder the image names are relative to (default: the XML's folder, or
            <xml dir>/images when the first image is found there instead).
        classes: class names fixing the label order; None: the <meta> labels, else the
            sorted unique labels.

    Returns:
        Dataset, one Record per <image> (document order; images without shapes are
        negatives); image ids are the <image id> + 1 (CVAT counts from 0).
    """
    root = _parse(path)
    images = root.findall("image")
    counts = {POLYGONS: 0, ROTATED: 0, OCCLUDED: 0, SKIPPED: 0}
    parsed = [_image(node, index, path, counts) for index, node in enumerate(images)]
    if classes is None:
        listed = [n.text.strip() for n in root.findall("meta//labels/label/name") if n.text]
        classes = list(dict.fromkeys(listed)) or sorted({shape[0] for *_, shapes in parsed for shape in shapes})
    classes = list(classes)
    label_of = {name: label for label, name in enumerate(classes, start=1)}
    base = _images_dir(path, images_dir, [name for _, name, *_ in parsed])
    records = []
    for image_id, name, width, height, shapes in parsed:
        for label, *_ in shapes:
            if label not in label_of:
                raise DetectError(f"{path}: image {name!r}: label {label!r} is not in the classes {classes}")
        masks = [polygon for *_, polygon in shapes]
        records.append(Record(image_id, name, os.path.normpath(os.path.join(base, name)), width, height,
                              [box for _, box, _ in shapes], [label_of[label] for label, *_ in shapes],
                              masks=masks if any(m is not None for m in masks) else None))
    return Dataset(classes=classes, records=records, source=os.path.abspath(path), notes=counts)


def _parse(path):
    if not os.path.isfile(path):
        raise DetectError(f"CVAT XML file not found: {path}")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as error:
        raise DetectError(f"{path}: invalid XML: {error}") from None
    if root.tag != "annotations":
        raise DetectError(f"{path}: not a CVAT for images file (root <{root.tag}>, expected <annotations>)")
    if root.find("track") is not None and root.find("image") is None:
        raise DetectError(f"{path}: CVAT for video (<track>) is not supported; export 'CVAT for images 1.1'")
    return root


def _image(node, index, path, counts):
    """(image id, name, width, height, [(label, (4,) xyxy, polygon or None)]) of one <image>."""
    name = (node.get("name") or "").replace("\\", "/")
    if not name:
        raise DetectError(f"{path}: <image> {index} has no name")
    try:
        image_id = int(node.get("id", index)) + 1
        width, height = int(node.get("width")), int(node.get("height"))
    except (TypeError, ValueError):
        raise DetectError(f"{path}: image {name!r}: id, width and height must be integers") from None
    shapes = []
    for shape_index, shape in enumerate(node):
        where = f"{path}: image {name!r} shape {shape_index}"
        if shape.tag == "box":
            shapes.append((_label(shape, where), _box(shape, where, counts), None))
        elif shape.tag == "polygon":
            shapes.append((_label(shape, where), *_polygon(shape, where)))
            counts[POLYGONS] += 1
        elif shape.tag in _OTHER_SHAPES:
            counts[SKIPPED] += 1
    return image_id, name, width, height, shapes


def _label(shape, where):
    label = (shape.get("label") or "").strip()
    if not label:
        raise DetectError(f"{where} has no label")
    return label


def _box(shape, where, counts):
    """(4,) float32 xyxy of a <box>, rotated boxes replaced by their bounding box."""
    try:
        x1, y1, x2, y2 = (float(shape.get(key)) for key in ("xtl", "ytl", "xbr", "ybr"))
        rotation = float(shape.get("rotation") or 0.0)
    except (TypeError, ValueError):
        raise DetectError(f"{where}: <box> needs numeric xtl, ytl, xbr, ybr") from None
    counts[OCCLUDED] += int(shape.get("occluded", "0") not in ("0", "false", ""))
    if rotation % 360:
        counts[ROTATED] += 1
        cx, cy, half_w, half_h = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
        cos, sin = abs(math.cos(math.radians(rotation))), abs(math.sin(math.radians(rotation)))
        ext_x, ext_y = half_w * cos + half_h * sin, half_w * sin + half_h * cos
        x1, y1, x2, y2 = cx - ext_x, cy - ext_y, cx + ext_x, cy + ext_y
    return np.array([x1, y1, x2, y2], np.float32)


def _polygon(shape, where):
    """((4,) float32 xyxy bounding box, flat polygon [x1, y1, ...]) of `points="x1,y1;x2,y2;..."`."""
    try:
        points = np.array([[float(v) for v in pair.split(",")] for pair in shape.get("points", "").split(";")])
    except ValueError:
        raise DetectError(f"{where}: polygon points must be 'x1,y1;x2,y2;...'") from None
    if points.ndim != 2 or points.shape[1] != 2 or len(points) < 3:
        raise DetectError(f"{where}: a polygon needs at least 3 points 'x,y'")
    box = np.concatenate([points.min(axis=0), points.max(axis=0)]).astype(np.float32)
    return box, [flat_points(points)]


def _images_dir(path, images_dir, names):
    """Folder image names are relative to (see load_cvat)."""
    if images_dir is not None:
        return os.path.abspath(images_dir)
    folder = os.path.dirname(os.path.abspath(path))
    sibling = os.path.join(folder, "images")
    if names and not os.path.exists(os.path.join(folder, names[0])) \
            and os.path.exists(os.path.join(sibling, names[0])):
        return sibling
    return folder
