"""Convert a dataset between formats (`detect data convert`): any reader -> coco, voc, yolo or csv."""

import dataclasses
import logging
import os

from detect.data.formats import load_dataset
from detect.data.records import Dataset, write_coco
from detect.errors import DetectError

logger = logging.getLogger(__name__)

TARGETS = ("coco", "voc", "yolo", "csv")


def convert(src_format, src, dst, split=None, images=None, classes=None, to="coco",
            subset=None, image_mode="link"):
    """Load src (validated), write it to dst in format `to`, and return what was written.

    Image names in the output are relative to the deepest folder holding every image
    (for VOC sources: JPEGImages/); for COCO that folder is logged so the json can be
    loaded with `--images FOLDER` (or placed next to the images).

    Args:
        src_format: a format of formats.FORMATS.
        src: annotations as load_dataset() takes them.
        dst: COCO json file | VOC root folder | YOLO dataset folder (data.yaml, images/,
            labels/) | CSV file (classes.csv is written beside it).
        split, images, classes: passed to load_dataset() (classes keeps a class list with
            classes no box uses: VOC/LabelMe/CVAT/YOLO names file, CSV mapping).
        to: output format, one of TARGETS.
        subset: VOC/YOLO output split name (default: split, else "train").
        image_mode: VOC/YOLO: "link" (symbolic links) or "copy" the images.

    Returns:
        the written Dataset (file_names relative to images_root(dataset)).
    """
    if to not in TARGETS:
        raise DetectError(f"unknown output format {to!r}: expected one of {TARGETS}")
    dataset = load_dataset(src_format, src, images=images, split=split, classes=classes)
    root = images_root(dataset, default=os.path.dirname(os.path.abspath(dst)))
    records = [
        dataclasses.replace(r, file_name=os.path.relpath(r.path, root).replace(os.sep, "/"))
        for r in dataset.records
    ]
    converted = Dataset(classes=dataset.classes, records=records,
                        category_ids=dataset.category_ids, source=dataset.source)
    skipped = _write(converted, to, dst, subset or split or "train", image_mode)
    if skipped:
        logger.warning("%d crowd boxes (ignore regions) left out: %s has no way to mark them",
                       skipped, to)
    logger.info("wrote %s (%s): %d images, %d boxes; image names are relative to %s",
                dst, to, len(converted), converted.num_boxes() - skipped, root)
    return converted


def _write(dataset, to, dst, subset, image_mode):
    """Write with the format's writer; returns the number of crowd boxes left out."""
    if to == "coco":
        write_coco(dataset, dst)
        return 0
    if to == "csv":
        from detect.data.csv import write_csv

        return write_csv(dataset, dst)[1]
    if to == "voc":
        from detect.data.voc import write_voc

        return write_voc(dataset, dst, subset=subset, image_mode=image_mode)
    from detect.data.yolo import write_yolo

    return write_yolo(dataset, dst, subset=subset, image_mode=image_mode)


def images_root(dataset, default="."):
    """Absolute path of the deepest folder that holds every image of dataset."""
    folders = {os.path.dirname(r.path) for r in dataset.records}
    if not folders:
        return os.path.abspath(default)
    return os.path.commonpath(sorted(folders))
