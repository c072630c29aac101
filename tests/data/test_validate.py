"""validate(): clip, drop with warnings naming file and box index, errors naming the file."""

import json
import logging
import os

import numpy as np
import pytest
from PIL import Image

from detect.data.formats import load_dataset
from detect.data.records import Dataset, Record
from detect.data.validate import validate
from detect.errors import DetectError

NAN = float("nan")


@pytest.fixture
def image(tmp_path):
    """A 20x10 (W x H) PNG."""
    path = tmp_path / "img.png"
    Image.new("RGB", (20, 10)).save(path)
    return str(path)


def _dataset(path, boxes, labels=None, width=20, height=10, classes=("a", "b")):
    labels = [1] * len(boxes) if labels is None else labels
    record = Record(1, os.path.basename(path), path, width, height, boxes=boxes,
                    labels=labels, difficult=[i % 2 == 1 for i in range(len(boxes))])
    return Dataset(list(classes), [record], source="test")


def test_clip_and_drop_with_warnings(image, caplog):
    boxes = [
        [2, 2, 8, 8],        # 0 kept as is
        [-3, 2, 5, 12],      # 1 partly outside (x1 < 0, y2 > H=10) -> clipped to [0, 2, 5, 10]
        [5, 5, 5, 9],        # 2 zero width -> dropped
        [8, 2, 4, 6],        # 3 inverted (x2 < x1) -> dropped
        [NAN, 1, 4, 4],      # 4 NaN -> dropped
        [25, 2, 30, 8],      # 5 x1 >= W=20: fully outside -> dropped
        [15, 0, 20, 10],     # 6 touches the right/bottom edges: inside, not clipped
        [-5, -5, 0, 3],      # 7 x2 <= 0: fully outside (zero overlap) -> dropped
    ]
    dataset = _dataset(image, boxes, labels=[1, 2, 1, 1, 1, 1, 2, 1])
    with caplog.at_level(logging.WARNING, logger="detect.data.validate"):
        cleaned, summary = validate(dataset)
    record = cleaned.records[0]
    np.testing.assert_array_equal(record.boxes, [[2, 2, 8, 8], [0, 2, 5, 10], [15, 0, 20, 10]])
    np.testing.assert_array_equal(record.labels, [1, 2, 2])
    # difficult was set on odd indices: boxes 1 and 7 among the kept 0, 1, 6.
    np.testing.assert_array_equal(record.difficult, [False, True, False])
    assert (summary.images, summary.boxes, summary.clipped, summary.dropped) == (1, 3, 1, 5)
    assert summary.negatives == 0
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 5
    assert all(m.startswith(image + ": box ") for m in messages)
    assert any("box 2 has zero width or height [5, 5, 5, 9]: dropped" in m for m in messages)
    assert any("box 3 is inverted" in m for m in messages)
    assert any("box 4 has a NaN" in m for m in messages)
    assert any("box 5 is fully outside the 20x10 image" in m for m in messages)
    assert any("box 7 is fully outside" in m for m in messages)
    # The input dataset is left untouched.
    assert dataset.records[0].boxes.shape == (8, 4) and dataset.records[0].boxes[1, 0] == -3


def test_all_boxes_dropped_makes_a_negative(image):
    cleaned, summary = validate(_dataset(image, [[1, 1, 1, 5]]))
    assert cleaned.records[0].boxes.shape == (0, 4) and cleaned.records[0].labels.shape == (0,)
    assert (summary.boxes, summary.dropped, summary.negatives) == (0, 1, 1)


def test_empty_inputs(image):
    cleaned, summary = validate(_dataset(image, np.zeros((0, 4))))
    assert cleaned.records[0].boxes.shape == (0, 4) and summary.negatives == 1
    cleaned, summary = validate(Dataset([], [], source="empty"))
    assert len(cleaned) == 0 and (summary.images, summary.boxes) == (0, 0)


@pytest.mark.parametrize("label", [0, 3, -1])
def test_label_outside_classes_names_file_and_box(image, label):
    dataset = _dataset(image, [[1, 1, 5, 5], [2, 2, 6, 6]], labels=[1, label])
    with pytest.raises(DetectError, match=rf"img.png: box 1 has label {label}, outside .* 1..2"):
        validate(dataset)


def test_missing_image(tmp_path):
    dataset = _dataset(str(tmp_path / "gone.png"), [[1, 1, 5, 5]])
    with pytest.raises(DetectError, match=r"image file not found: .*gone.png \(listed in test\)"):
        validate(dataset)
    # Without image checks only the annotations are checked.
    cleaned, summary = validate(dataset, check_images=False)
    assert summary.boxes == 1


def test_unreadable_image(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG but not really")
    with pytest.raises(DetectError, match=r"broken.png"):
        validate(_dataset(str(path), [[1, 1, 5, 5]]))


def test_size_disagreeing_with_header(image):
    dataset = _dataset(image, [[1, 1, 5, 5]], width=10, height=20)
    with pytest.raises(DetectError, match=r"img.png: annotations say 10x20 .* image is 20x10"):
        validate(dataset)


def test_invalid_annotated_size(image):
    with pytest.raises(DetectError, match=r"img.png: invalid image size 0x10"):
        validate(_dataset(image, [[1, 1, 5, 5]], width=0), check_images=False)


def test_summary_text(image):
    _, summary = validate(_dataset(image, [[-1, 0, 5, 5], [3, 3, 3, 3]]))
    text = str(summary)
    # One clipped ([-1, 0, 5, 5] -> [0, 0, 5, 5]), one dropped (zero size), one kept.
    assert "images:    1 (0 without boxes)" in text
    assert "boxes:     1 kept, 2 classes" in text
    assert "clipped:   1" in text and "dropped:   1" in text
    assert len(text.splitlines()) == 5


def test_load_dataset_applies_validation_to_coco(tmp_path, caplog):
    Image.new("RGB", (20, 10)).save(tmp_path / "img.png")
    data = {
        "images": [{"id": 3, "file_name": "img.png", "width": 20, "height": 10}],
        "annotations": [
            {"id": 1, "image_id": 3, "category_id": 1, "bbox": [15, 5, 10, 10]},
            {"id": 2, "image_id": 3, "category_id": 1, "bbox": [4, 4, 0, 3]},
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING):
        dataset = load_dataset("coco", str(tmp_path / "ann.json"))
    # [15, 5, 10, 10] xywh -> [15, 5, 25, 15] xyxy, clipped to the 20x10 image: [15, 5, 20, 10]
    np.testing.assert_array_equal(dataset.records[0].boxes, [[15, 5, 20, 10]])
    assert "img.png: box 1 has zero width or height" in caplog.text


def test_load_dataset_unknown_format():
    with pytest.raises(DetectError, match="unknown dataset format 'kitti'"):
        load_dataset("kitti", "x")
