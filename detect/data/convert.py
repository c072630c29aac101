"""Convert a VOC, CSV or COCO dataset to one COCO json (`detect data convert`)."""

import dataclasses
import logging
import os

from detect.data.formats import load_dataset
from detect.data.records import Dataset, write_coco

logger = logging.getLogger(__name__)


def convert(src_format, src, dst, split=None, images=None, classes=None):
    """Load src (validated), write it to dst as COCO json, and return what was written.

    The written file_names are relative to the deepest folder holding every image (for
    VOC: JPEGImages/); that folder is logged so the json can be loaded with
    `--images FOLDER` (or placed next to the images).

    Args:
        src_format: "voc", "csv" or "coco".
        src: annotations as load_dataset() takes them (VOC root, CSV file, COCO json).
        dst: the COCO json to write (parent folders are created).
        split, images, classes: passed to load_dataset().

    Returns:
        the written Dataset (file_names relative to images_root(dataset)).
    """
    dataset = load_dataset(src_format, src, images=images, split=split, classes=classes)
    root = images_root(dataset, default=os.path.dirname(os.path.abspath(dst)))
    records = [
        dataclasses.replace(r, file_name=os.path.relpath(r.path, root).replace(os.sep, "/"))
        for r in dataset.records
    ]
    converted = Dataset(
        classes=dataset.classes,
        records=records,
        category_ids=dataset.category_ids,
        source=dataset.source,
    )
    write_coco(converted, dst)
    logger.info("wrote %s: %d images, %d boxes; file_names are relative to %s",
                dst, len(converted), converted.num_boxes(), root)
    return converted


def images_root(dataset, default="."):
    """Absolute path of the deepest folder that holds every image of dataset."""
    folders = {os.path.dirname(r.path) for r in dataset.records}
    if not folders:
        return os.path.abspath(default)
    return os.path.commonpath(sorted(folders))
