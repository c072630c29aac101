"""Format name -> reader: `load_dataset` loads, validates and summarises any format.

The readers import records.py (they produce its Dataset); records.py imports no reader, so
this dispatch lives here rather than in records.py.
"""

import logging
import os

from detect.data.validate import validate
from detect.errors import DetectError
from detect.io import read_text

logger = logging.getLogger(__name__)

FORMATS = ("coco", "voc", "csv", "yolo", "labelme", "cvat")
# Formats whose `split` argument names a subset of one annotation source.
_SPLIT_FORMATS = ("voc", "yolo")


def load_dataset(format, annotations, images=None, split=None, classes=None,
                 check_images=True):
    """Load, validate and summarise a dataset.

    Args:
        format: one of FORMATS.
        annotations: COCO json file | VOC root (Annotations/, JPEGImages/, ImageSets/Main/)
            | keras-retinanet CSV file | YOLO data.yaml, image folder or image-list .txt
            | folder of LabelMe JSON files (or one file) | CVAT for images 1.1 XML file.
        images: folder image names are relative to (COCO: default the json's folder, then
            <json dir>/../images; VOC: default root/JPEGImages; CSV: default the CSV's
            folder; CVAT: default the XML's folder, then <xml dir>/images; LabelMe:
            searched first for each imagePath, then the JSON's folder, see labelme.py).
            Not used for YOLO, whose files locate their images themselves.
        split: VOC: ImageSets/Main/<split>.txt (None: every xml in Annotations/);
            YOLO data.yaml: the key to read (train, val, test).
        classes: VOC, LabelMe, CVAT, YOLO darknet layout: a list of class names or a text
            file with one name per line; CSV: class-mapping CSV `name,id`. Not used for
            COCO. Classes no box uses are kept.
        check_images: check that every image exists, has a readable header and matches
            its annotated size. CSV and YOLO images are always opened: their sizes come
            from the headers.

    Returns:
        the validated Dataset; its summary is logged.
    """
    if format not in FORMATS:
        raise DetectError(f"unknown dataset format {format!r}: expected one of {FORMATS}")
    if os.path.isfile(annotations) and os.path.getsize(annotations) == 0:
        raise DetectError(f"{annotations}: the annotation file is empty")
    if split is not None and format not in _SPLIT_FORMATS:
        logger.warning("split=%r ignored: only VOC and YOLO datasets have splits", split)
    dataset = _read(format, annotations, images, split, classes)
    dataset, summary = validate(dataset, check_images=check_images)
    logger.info("%s", summary)
    return dataset


def _read(format, annotations, images, split, classes):
    """The unvalidated Dataset from the format's reader."""
    if format == "coco":
        from detect.data.coco import load_coco

        if classes is not None:
            raise DetectError("classes is not used for COCO: the json lists its categories")
        return load_coco(annotations, images)
    if format == "voc":
        from detect.data.voc import load_voc

        return load_voc(annotations, split, images, classes=class_names(classes))
    if format == "csv":
        from detect.data.csv import load_csv

        return load_csv(annotations, classes, images_dir=images)
    if format == "yolo":
        from detect.data.yolo import load_yolo

        return load_yolo(annotations, split=split, classes=class_names(classes))
    if format == "labelme":
        from detect.data.labelme import load_labelme

        return load_labelme(annotations, classes=class_names(classes), images=images)
    from detect.data.cvat import load_cvat

    return load_cvat(annotations, images, classes=class_names(classes))


def class_names(classes):
    """A list of names, or the lines of a text file when classes is a path."""
    if classes is None or isinstance(classes, (list, tuple)):
        return classes
    try:
        return [line.strip() for line in read_text(classes).splitlines() if line.strip()]
    except OSError as error:
        raise DetectError(f"cannot read class list {classes}: {error.strerror}") from None
