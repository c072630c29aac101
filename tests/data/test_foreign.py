"""Files written by supervision and globox (YOLO, LabelMe, CVAT) convert to COCO with every
box within 1 px of the source set and every class kept.

The fixtures come from scripts/make_foreign_fixtures.py, run in a separate environment with
supervision and globox installed (neither is a dependency of detect).
"""

import os

import numpy as np
import pytest

from detect.data.convert import convert
from detect.data.formats import load_dataset

FOREIGN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "foreign")
SOURCE = os.path.join(FOREIGN, "source", "annotations", "instances.json")

CASES = {
    "supervision_yolo": ("yolo", "supervision_yolo/data.yaml", None),
    "globox_yolo": ("yolo", "globox_yolo", "globox_yolo/obj.names"),
    "globox_labelme": ("labelme", "globox_labelme", None),
    "globox_cvat": ("cvat", "globox_cvat/annotations.xml", None),
}


def _named_boxes(dataset):
    """{image base name: sorted [(class name, x1, y1, x2, y2)]}."""
    return {
        os.path.basename(r.file_name): sorted(
            (dataset.classes[label - 1], *map(float, box)) for box, label in zip(r.boxes, r.labels))
        for r in dataset.records
    }


@pytest.mark.parametrize("case", sorted(CASES))
def test_foreign_files_convert_to_coco(tmp_path, case):
    fmt, annotations, classes = CASES[case]
    classes = os.path.join(FOREIGN, classes) if classes else None
    out = tmp_path / "converted.json"
    written = convert(fmt, os.path.join(FOREIGN, annotations), str(out), classes=classes)
    from detect.data.convert import images_root

    converted = load_dataset("coco", str(out), images=images_root(written))
    source = load_dataset("coco", SOURCE)
    assert sorted(converted.classes) == sorted(source.classes)
    expected, got = _named_boxes(source), _named_boxes(converted)
    assert sorted(got) == sorted(expected)
    for name, boxes in expected.items():
        assert [b[0] for b in got[name]] == [b[0] for b in boxes], name
        if boxes:
            np.testing.assert_allclose(np.array([b[1:] for b in got[name]]),
                                       np.array([b[1:] for b in boxes]), atol=1.0, err_msg=name)
    # The negative stays a negative.
    assert got["né.png"] == []
