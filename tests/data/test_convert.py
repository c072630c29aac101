"""convert(): VOC / CSV / COCO -> COCO json that pycocotools reads with the right boxes."""

import json
import os

import numpy as np
import pytest
from pycocotools.coco import COCO

from detect.data.convert import convert, images_root
from detect.data.formats import load_dataset
from detect.data.records import Dataset
from detect.errors import DetectError

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")
VOC_ROOT = os.path.join(FIXTURES, "voc", "VOC2007")
CSV_DIR = os.path.join(FIXTURES, "csv")
COCO_JSON = os.path.join(FIXTURES, "coco", "annotations", "instances.json")


def _bboxes(coco, image_id):
    return [(a["category_id"], a["bbox"], a["iscrowd"], a["difficult"])
            for a in coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))]


def test_voc_to_coco(tmp_path):
    dst = tmp_path / "out" / "train.json"
    written = convert("voc", VOC_ROOT, str(dst), split="train")
    coco = COCO(str(dst))
    assert len(coco.getCatIds()) == 20 and coco.loadCats(12)[0]["name"] == "dog"
    images = coco.loadImgs([1, 2])
    assert [(i["file_name"], i["width"], i["height"]) for i in images] == [
        ("000001.jpg", 64, 48), ("000002.jpg", 80, 60)]
    # VOC dog (5, 10, 30, 40) 1-based -> xyxy (4, 9, 30, 40) -> xywh (4, 9, 26, 31);
    # difficult person (40, 1, 64, 48) -> (39, 0, 64, 48) -> (39, 0, 25, 48).
    assert _bboxes(coco, 1) == [(12, [4.0, 9.0, 26.0, 31.0], 0, 0),
                                (15, [39.0, 0.0, 25.0, 48.0], 0, 1)]
    # cat (10.5, 12.75, 50.25, 40.5) -> (9.5, 11.75, 50.25, 40.5) -> (9.5, 11.75, 40.75, 28.75)
    assert _bboxes(coco, 2) == [(8, [9.5, 11.75, 40.75, 28.75], 0, 0)]
    assert images_root(written) == os.path.join(VOC_ROOT, "JPEGImages")
    # The written json loads back to the same boxes with --images set to the reported root.
    again = load_dataset("coco", str(dst), images=images_root(written))
    np.testing.assert_array_equal(again.records[0].boxes, [[4, 9, 30, 40], [39, 0, 64, 48]])
    np.testing.assert_array_equal(again.records[0].difficult, [False, True])


def test_voc_negative_and_headerless_size(tmp_path):
    dst = tmp_path / "val.json"
    convert("voc", VOC_ROOT, str(dst), split="val")
    coco = COCO(str(dst))
    assert (coco.imgs[1]["width"], coco.imgs[1]["height"]) == (48, 32)
    assert coco.getAnnIds(imgIds=[2]) == []


def test_csv_to_coco_file_names_relative_to_images_root(tmp_path):
    dst = tmp_path / "csv.json"
    written = convert("csv", os.path.join(CSV_DIR, "annotations.csv"), str(dst),
                      classes=os.path.join(CSV_DIR, "classes.csv"))
    # Every image sits under csv/images, so names are relative to it.
    assert images_root(written) == os.path.join(CSV_DIR, "images")
    coco = COCO(str(dst))
    assert [coco.imgs[i]["file_name"] for i in (1, 2, 3)] == ["a.png", "sub/c.jpg", "b.png"]
    assert [(c["id"], c["name"]) for c in coco.loadCats([1, 2])] == [(1, "zebra"), (2, "apple")]
    # CSV coordinates are taken as given: (10, 5, 30, 20) -> xywh (10, 5, 20, 15).
    assert _bboxes(coco, 1) == [(1, [10.0, 5.0, 20.0, 15.0], 0, 0),
                                (2, [32.0, 24.0, 32.0, 24.0], 0, 0)]
    assert _bboxes(coco, 2) == [(2, [0.0, 0.0, 16.0, 16.0], 0, 0)]
    assert coco.getAnnIds(imgIds=[3]) == []


def test_coco_to_coco_keeps_ids_crowd_and_negatives(tmp_path):
    dst = tmp_path / "copy.json"
    convert("coco", COCO_JSON, str(dst))
    coco = COCO(str(dst))
    assert sorted(coco.getCatIds()) == [3, 7, 90]
    assert sorted(coco.getImgIds()) == [7, 9, 42]
    assert _bboxes(coco, 7) == [(7, [40.0, 30.0, 30.0, 20.0], 0, 0),
                                (7, [0.0, 0.0, 20.0, 10.0], 1, 0)]
    assert coco.getAnnIds(imgIds=[9]) == []
    with open(dst) as f:
        assert [a["id"] for a in json.load(f)["annotations"]] == [1, 2, 3, 4]


def test_bad_source_is_a_detect_error(tmp_path):
    with pytest.raises(DetectError, match="COCO annotation file not found"):
        convert("coco", str(tmp_path / "none.json"), str(tmp_path / "out.json"))
    assert not (tmp_path / "out.json").exists()


def test_images_root_of_empty_dataset(tmp_path):
    assert images_root(Dataset([], []), default=str(tmp_path)) == str(tmp_path)
