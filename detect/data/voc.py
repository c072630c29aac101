"""Pascal VOC (Annotations/*.xml + JPEGImages/ + ImageSets/Main/<split>.txt) -> Dataset.

VOC pixel coordinates are 1-based and inclusive: a box over pixel columns 1..W of an image
W pixels wide is xmin=1, xmax=W. In the continuous 0-based convention used everywhere else
that is x1 = xmin - 1, x2 = xmax (and the same for y).
"""

import glob
import logging
import os
import re
import xml.etree.ElementTree as ET

import numpy as np

from detect.data.images import image_size
from detect.data.records import Dataset, Record
from detect.errors import DetectError
from detect.io import read_text

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
        rows = [(box, label_of[name], False, difficult) for name, box, difficult in objects]
        records.append(Record.from_objects(image_id, file_name, path, width, height, rows))
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
    ids = [_split_id(line, annotations) for line in read_text(split_file).splitlines() if line.strip()]
    files = [os.path.join(annotations, f"{image_id}.xml") for image_id in ids]
    for path in files:
        if not os.path.isfile(path):
            raise DetectError(f"annotation file not found: {path} (listed in {split_file})")
    return files


# Class-specific split files (ImageSets/Main/<class>_<split>.txt) end each line with a
# flag column: 1 present, -1 absent, 0 difficult only.
_FLAG_COLUMN = re.compile(r"\s+(-1|0|1)$")


def _split_id(line, annotations):
    """The image id of one ImageSets line: the whole line ("coffee cup" may hold spaces)
    minus a trailing " -1/0/1" flag column, unless the whole line names an xml itself."""
    image_id = line.strip()
    stripped = _FLAG_COLUMN.sub("", image_id)
    if stripped != image_id and not os.path.isfile(os.path.join(annotations, f"{image_id}.xml")):
        return stripped
    return image_id


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


def write_voc(dataset, root, subset="train", image_mode="link"):
    """Write dataset in the VOC layout under root.

    Writes Annotations/<id>.xml, JPEGImages/<id><ext> (linked or copied, see
    links.place_image), ImageSets/Main/<subset>.txt and classes.txt (every class, one a
    line, in label order: pass it back as the class list to keep unused classes and the
    order). <id> is the image's relative name with folders joined by "__" and white space
    replaced by "_" (VOC ids are single words). Boxes go to 1-based VOC pixels
    (xmin = x1 + 1, xmax = x2); difficult flags are kept; crowd boxes are left out.

    Returns:
        number of crowd boxes left out.
    """
    from detect.data.links import place_image
    from detect.io import atomic_write

    ids, taken, skipped = [], set(), 0
    for record in dataset.records:
        stem, ext = os.path.splitext(record.file_name.replace("\\", "/"))
        image_id = _unique_id("_".join(stem.split()).replace("/", "__").lstrip("._") or "image", taken)
        ids.append(image_id)
        place_image(record.path, os.path.join(root, "JPEGImages", image_id + ext), image_mode)
        skipped += int(np.count_nonzero(record.iscrowd))
        with atomic_write(os.path.join(root, "Annotations", image_id + ".xml"), fsync=False) as f:
            f.write(_voc_xml(record, image_id + ext, dataset.classes))
    with atomic_write(os.path.join(root, "ImageSets", "Main", f"{subset}.txt")) as f:
        f.write("".join(f"{image_id}\n" for image_id in ids))
    with atomic_write(os.path.join(root, "classes.txt")) as f:
        f.write("".join(f"{name}\n" for name in dataset.classes))
    return skipped


def _unique_id(image_id, taken):
    """image_id, or image_id_2, _3, ... when the set taken holds it; added to taken."""
    candidate, n = image_id, 1
    while candidate in taken:
        n += 1
        candidate = f"{image_id}_{n}"
    taken.add(candidate)
    return candidate


def _voc_xml(record, file_name, classes):
    """The annotation XML text of one record."""
    node = ET.Element("annotation")
    ET.SubElement(node, "filename").text = file_name
    size = ET.SubElement(node, "size")
    for tag, value in (("width", record.width), ("height", record.height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(int(value))
    for box, label, crowd, difficult in zip(record.boxes, record.labels, record.iscrowd, record.difficult):
        if crowd:
            continue
        obj = ET.SubElement(node, "object")
        ET.SubElement(obj, "name").text = classes[int(label) - 1]
        ET.SubElement(obj, "difficult").text = str(int(difficult))
        bndbox = ET.SubElement(obj, "bndbox")
        x1, y1, x2, y2 = (float(v) for v in box)
        for tag, value in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
            ET.SubElement(bndbox, tag).text = f"{value:.4f}".rstrip("0").rstrip(".")
    ET.indent(node)
    return ET.tostring(node, encoding="unicode") + "\n"
