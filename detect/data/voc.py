"""Pascal VOC (Annotations/*.xml + JPEGImages/ + ImageSets/Main/<split>.txt) -> Dataset.

VOC pixel coordinates are 1-based and inclusive: a box over pixel columns 1..W of an image
W pixels wide is xmin=1, xmax=W. In the continuous 0-based convention used everywhere else
that is x1 = xmin - 1, x2 = xmax (and the same for y).
"""

import glob
import logging
import os
import xml.etree.ElementTree as ET

import numpy as np

from detect.data.images import image_size
from detect.data.records import Dataset, Record
from detect.errors import DetectError

logger = logging.getLogger(__name__)

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)


def load_voc(root, split, images_dir=None, classes=None):
    """Read a VOC-layout dataset into an unvalidated Dataset.

    Args:
        root: folder holding Annotations/, JPEGImages/ and ImageSets/Main/.
        split: name of ImageSets/Main/<split>.txt; None reads every Annotations/*.xml.
        images_dir: image folder (default root/JPEGImages).
        classes: class names forcing the label order; None gives the 20 VOC classes when
            every name found is a VOC class, else the sorted unique names.

    Returns:
        Dataset; image ids are 1.. in split-file order; difficult objects kept (flagged).
    """
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        raise DetectError(f"VOC root folder not found: {root}")
    images_dir = os.path.abspath(images_dir or os.path.join(root, "JPEGImages"))
    parsed = [_parse_xml(xml_path, images_dir) for xml_path in _xml_files(root, split)]

    names = [obj[0] for *_, objects in parsed for obj in objects]
    classes = _class_list(names, classes)
    label_of = {name: label for label, name in enumerate(classes, start=1)}
    records = []
    for image_id, (xml_path, file_name, path, width, height, objects) in enumerate(parsed, 1):
        for name, *_ in objects:
            if name not in label_of:
                raise DetectError(f"{xml_path}: unknown class {name!r} (classes: {classes})")
        records.append(
            Record(
                image_id=image_id,
                file_name=file_name,
                path=path,
                width=width,
                height=height,
                boxes=[obj[1] for obj in objects],
                labels=[label_of[obj[0]] for obj in objects],
                difficult=[obj[2] for obj in objects],
            )
        )
    source = os.path.join(root, "ImageSets", "Main", f"{split}.txt") if split else root
    return Dataset(classes=classes, records=records, source=source)


def _xml_files(root, split):
    annotations = os.path.join(root, "Annotations")
    if split is None:
        files = sorted(glob.glob(os.path.join(annotations, "*.xml")))
        if not files:
            raise DetectError(f"no .xml files in {annotations}")
        return files
    split_file = os.path.join(root, "ImageSets", "Main", f"{split}.txt")
    if not os.path.isfile(split_file):
        raise DetectError(f"VOC split file not found: {split_file}")
    with open(split_file, encoding="utf-8") as f:
        # Class-specific split files carry a second column (1/-1/0); the id comes first.
        ids = [line.split()[0] for line in f if line.strip()]
    files = [os.path.join(annotations, f"{image_id}.xml") for image_id in ids]
    for path in files:
        if not os.path.isfile(path):
            raise DetectError(f"annotation file not found: {path} (listed in {split_file})")
    return files


def _parse_xml(xml_path, images_dir):
    """(xml_path, file_name, image path, width, height, [(name, box xyxy, difficult)])."""
    if os.path.getsize(xml_path) == 0:
        raise DetectError(f"{xml_path}: the annotation file is empty")
    try:
        tree = ET.parse(xml_path)
    except ET.ParseError as error:
        raise DetectError(f"{xml_path}: invalid XML: {error}") from None
    node = tree.getroot()
    stem = os.path.splitext(os.path.basename(xml_path))[0]
    file_name = _file_name(node.findtext("filename"), stem, images_dir)
    path = os.path.join(images_dir, file_name)
    width, height = _size(node.find("size"), xml_path, path)
    objects = [_object(obj, i, xml_path) for i, obj in enumerate(node.findall("object"))]
    return xml_path, file_name, path, width, height, objects


def _file_name(tag, stem, images_dir):
    """The <filename> tag when that file exists, else <stem>.jpg (the VOC naming rule)."""
    candidates = [c for c in ((tag or "").strip(), f"{stem}.jpg") if c]
    for candidate in candidates:
        if os.path.exists(os.path.join(images_dir, candidate)):
            return candidate
    return candidates[0]


def _size(size, xml_path, image_path):
    """(width, height) from <size>, else from the image header with a warning."""
    if size is not None:
        try:
            width = int(float(size.findtext("width")))
            height = int(float(size.findtext("height")))
        except (TypeError, ValueError):
            width = height = 0
        if width > 0 and height > 0:
            return width, height
    logger.warning("%s: no valid <size>; reading the size from %s", xml_path, image_path)
    return image_size(image_path)


def _object(obj, index, xml_path):
    """(name, (4,) float32 xyxy 0-based continuous, difficult) for one <object>."""
    name = (obj.findtext("name") or "").strip()
    if not name:
        raise DetectError(f"{xml_path}: object {index} has no <name>")
    bndbox = obj.find("bndbox")
    if bndbox is None:
        raise DetectError(f"{xml_path}: object {index} ({name}) has no <bndbox>")
    try:
        xmin, ymin, xmax, ymax = (
            float(bndbox.findtext(tag)) for tag in ("xmin", "ymin", "xmax", "ymax")
        )
    except (TypeError, ValueError):
        raise DetectError(
            f"{xml_path}: object {index} ({name}): <bndbox> needs numeric xmin/ymin/xmax/ymax"
        ) from None
    box = np.array([xmin - 1.0, ymin - 1.0, xmax, ymax], np.float32)
    try:
        difficult = bool(int(float(obj.findtext("difficult") or 0)))
    except ValueError:
        raise DetectError(
            f"{xml_path}: object {index} ({name}): <difficult> must be 0 or 1"
        ) from None
    return name, box, difficult


def _class_list(names, classes):
    if classes is not None:
        classes = [str(c).strip() for c in classes]
        if len(set(classes)) != len(classes):
            raise DetectError(f"duplicate names in the class list {classes}")
        return classes
    found = set(names)
    if found <= set(VOC_CLASSES):
        return list(VOC_CLASSES)
    return sorted(found)
