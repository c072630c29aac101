"""COCO reader, Dataset id mapping, to_coco / write_coco round trips."""

import json
import logging
import os

import numpy as np
import pytest
from pycocotools.coco import COCO

from detect.data.coco import load_coco
from detect.data.formats import load_dataset
from detect.data.records import Dataset, Record, write_coco
from detect.errors import DetectError

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")
COCO_JSON = os.path.join(FIXTURES, "coco", "annotations", "instances.json")
COCO_IMAGES = os.path.join(FIXTURES, "coco", "images")


def test_fixture_classes_follow_ascending_category_ids():
    dataset = load_coco(COCO_JSON)
    # The json lists categories 90, 3, 7; labels follow ascending id: 3 -> 1, 7 -> 2, 90 -> 3.
    assert dataset.classes == ["square", "circle", "triangle"]
    assert dataset.category_ids == [3, 7, 90]
    assert [dataset.category_id_to_label(c) for c in (3, 7, 90)] == [1, 2, 3]
    assert [dataset.label_to_category_id(k) for k in (1, 2, 3)] == [3, 7, 90]


def test_fixture_boxes_labels_and_flags():
    dataset = load_coco(COCO_JSON)
    assert [r.image_id for r in dataset.records] == [42, 7, 9]
    a, b, c = dataset.records
    assert (a.file_name, a.width, a.height) == ("a.png", 64, 48)
    # Images sit in ../images relative to the json's folder.
    assert a.path == os.path.join(COCO_IMAGES, "a.png")
    # xywh -> xyxy: [10, 5, 20, 15] -> [10, 5, 30, 20];
    # [0.5, 1.5, 12.25, 8] -> [0.5, 1.5, 0.5 + 12.25, 1.5 + 8] = [0.5, 1.5, 12.75, 9.5]
    np.testing.assert_array_equal(a.boxes, [[10, 5, 30, 20], [0.5, 1.5, 12.75, 9.5]])
    assert a.boxes.dtype == np.float32 and a.labels.dtype == np.int32
    np.testing.assert_array_equal(a.labels, [3, 1])
    # [40, 30, 30, 20] -> [40, 30, 70, 50]; the crowd region [0, 0, 20, 10] -> [0, 0, 20, 10]
    np.testing.assert_array_equal(b.boxes, [[40, 30, 70, 50], [0, 0, 20, 10]])
    np.testing.assert_array_equal(b.labels, [2, 2])
    np.testing.assert_array_equal(b.iscrowd, [False, True])
    np.testing.assert_array_equal(b.difficult, [False, False])
    # c.png has no annotations: kept as a negative image.
    assert c.boxes.shape == (0, 4) and c.labels.shape == (0,) and c.iscrowd.shape == (0,)
    assert dataset.num_boxes() == 4 and len(dataset) == 3


def test_explicit_images_dir(tmp_path):
    dataset = load_coco(COCO_JSON, images_dir=str(tmp_path))
    assert dataset.records[0].path == os.path.join(str(tmp_path), "a.png")


def test_load_dataset_validates_and_logs_summary(caplog):
    with caplog.at_level(logging.INFO):
        dataset = load_dataset("coco", COCO_JSON)
    assert len(dataset) == 3 and dataset.num_boxes() == 4
    assert "3 (1 without boxes)" in caplog.text


def test_unknown_category_id_and_bad_label():
    dataset = load_coco(COCO_JSON)
    with pytest.raises(DetectError, match="unknown category id 4"):
        dataset.category_id_to_label(4)
    with pytest.raises(ValueError):
        dataset.label_to_category_id(0)


def test_to_coco_loads_in_pycocotools_with_original_ids(tmp_path):
    dataset = load_coco(COCO_JSON)
    out = tmp_path / "out" / "coco.json"
    write_coco(dataset, str(out))
    assert os.listdir(out.parent) == ["coco.json"]  # no temp file left behind
    coco = COCO(str(out))
    assert sorted(coco.getCatIds()) == [3, 7, 90]
    assert [c["name"] for c in coco.loadCats([3, 7, 90])] == ["square", "circle", "triangle"]
    assert sorted(coco.getImgIds()) == [7, 9, 42]
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[42]))
    # xyxy [0.5, 1.5, 12.75, 9.5] -> xywh [0.5, 1.5, 12.25, 8.0], area 12.25 * 8 = 98
    assert [(a["category_id"], a["bbox"]) for a in anns] == [
        (90, [10.0, 5.0, 20.0, 15.0]),
        (3, [0.5, 1.5, 12.25, 8.0]),
    ]
    assert anns[1]["area"] == 98.0 and anns[1]["difficult"] == 0
    crowd = coco.loadAnns(coco.getAnnIds(imgIds=[7], iscrowd=True))
    assert [a["bbox"] for a in crowd] == [[0.0, 0.0, 20.0, 10.0]]
    assert coco.getAnnIds(imgIds=[9]) == []


def test_write_then_read_round_trip(tmp_path):
    dataset = load_coco(COCO_JSON)
    dataset.records[1].difficult[0] = True
    out = tmp_path / "coco.json"
    out.write_text("old content")
    write_coco(dataset, str(out))
    again = load_coco(str(out), images_dir=COCO_IMAGES)
    assert again.classes == dataset.classes and again.category_ids == dataset.category_ids
    for r1, r2 in zip(dataset.records, again.records):
        assert (r1.image_id, r1.file_name, r1.path) == (r2.image_id, r2.file_name, r2.path)
        np.testing.assert_array_equal(r1.boxes, r2.boxes)
        np.testing.assert_array_equal(r1.labels, r2.labels)
        np.testing.assert_array_equal(r1.iscrowd, r2.iscrowd)
        np.testing.assert_array_equal(r1.difficult, r2.difficult)


def test_float32_noise_is_rounded_in_json():
    record = Record(1, "x.png", "/x.png", 50, 50, boxes=[[10.1, 0, 20.2, 5]], labels=[1])
    ann = Dataset(["a"], [record]).to_coco()["annotations"][0]
    # float32(10.1) is 10.100000381...; written as 10.1 and w = 20.2 - 10.1 = 10.1
    assert ann["bbox"] == [10.1, 0.0, 10.1, 5.0]


def _write_json(tmp_path, data):
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return str(path)


def _minimal(**changes):
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}],
        "annotations": [{"id": 5, "image_id": 1, "category_id": 2, "bbox": [1, 2, 3, 4]}],
        "categories": [{"id": 2, "name": "thing"}],
    }
    data.update(changes)
    return data


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.json")
    with pytest.raises(DetectError, match="not found: .*nope.json"):
        load_coco(path)


def test_invalid_json_names_file_and_line(tmp_path):
    path = _write_json(tmp_path, '{\n  "images": [,]\n}')
    with pytest.raises(DetectError, match=r"ann.json: invalid JSON at line 2"):
        load_coco(path)


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_missing_key(tmp_path, key):
    data = _minimal()
    del data[key]
    with pytest.raises(DetectError, match=rf"ann.json: missing key '{key}'"):
        load_coco(_write_json(tmp_path, data))


def test_unknown_image_id_names_annotation(tmp_path):
    data = _minimal(annotations=[{"id": 17, "image_id": 99, "category_id": 2,
                                  "bbox": [1, 2, 3, 4]}])
    with pytest.raises(DetectError, match="annotation id 17 .*unknown image_id 99"):
        load_coco(_write_json(tmp_path, data))


def test_unknown_category_id_names_annotation(tmp_path):
    data = _minimal(annotations=[{"id": 18, "image_id": 1, "category_id": 5,
                                  "bbox": [1, 2, 3, 4]}])
    with pytest.raises(DetectError, match="annotation id 18 .*unknown category_id 5"):
        load_coco(_write_json(tmp_path, data))


def test_annotation_without_bbox(tmp_path):
    data = _minimal(annotations=[{"id": 19, "image_id": 1, "category_id": 2,
                                  "segmentation": [[1, 1, 5, 1, 5, 5]]}])
    with pytest.raises(DetectError, match=r"annotation id 19 .*needs a bbox"):
        load_coco(_write_json(tmp_path, data))


def test_duplicate_image_id(tmp_path):
    images = [{"id": 1, "file_name": "a.png", "width": 4, "height": 4},
              {"id": 1, "file_name": "b.png", "width": 4, "height": 4}]
    with pytest.raises(DetectError, match="duplicate image id 1 .b.png"):
        load_coco(_write_json(tmp_path, _minimal(images=images)))


def test_missing_size_falls_back_to_header(tmp_path, caplog):
    data = _minimal(images=[{"id": 1, "file_name": "a.png"}])
    path = _write_json(tmp_path, data)
    with caplog.at_level(logging.WARNING):
        dataset = load_coco(path, images_dir=COCO_IMAGES)
    assert (dataset.records[0].width, dataset.records[0].height) == (64, 48)
    assert "a.png has no width/height" in caplog.text


def test_empty_dataset_round_trip(tmp_path):
    dataset = load_coco(_write_json(tmp_path, {"images": [], "annotations": [],
                                               "categories": []}))
    assert len(dataset) == 0 and dataset.num_boxes() == 0 and dataset.classes == []
    out = tmp_path / "empty.json"
    write_coco(dataset, str(out))
    assert COCO(str(out)).getImgIds() == []
