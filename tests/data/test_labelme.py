"""LabelMe reader on hand-written files (LabelMe 5 and 3 styles) and its errors."""

import json
import os

import numpy as np
import pytest

from detect.data.formats import load_dataset
from detect.data.labelme import load_labelme
from detect.errors import DetectError

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "labelme")


def test_folder_of_labelme_files():
    dataset = load_labelme(ROOT)
    assert dataset.classes == ["café", "dog", "traffic light"]
    records = {r.file_name: r for r in dataset.records}
    assert sorted(records) == ["a.png", "images/ré union.jpg", "negative.png"]
    a = records["a.png"]
    # rectangle corners (40, 30), (10, 5) in reverse order -> (10, 5, 40, 30);
    # polygon (1, 2), (20, 4), (12, 30) -> (1, 2, 20, 30); the point shape is skipped.
    np.testing.assert_array_equal(a.boxes, [[10, 5, 40, 30], [1, 2, 20, 30]])
    np.testing.assert_array_equal(a.labels, [3, 1])
    reunion = records["images/ré union.jpg"]
    # imagePath "..\\images\\ré union.jpg" is relative to sub dir/ and uses backslashes;
    # imageData (not an image) is ignored; the shape without shape_type is a polygon.
    assert reunion.path == os.path.join(ROOT, "images", "ré union.jpg")
    np.testing.assert_array_equal(reunion.boxes, [[0.5, 1.5, 79.5, 59], [10, 10, 30, 20]])
    np.testing.assert_array_equal(reunion.labels, [1, 2])
    negative = records["negative.png"]
    # No imageWidth/imageHeight: the size comes from the image header.
    assert (negative.width, negative.height, len(negative.boxes)) == (32, 24, 0)
    assert dataset.notes == {"polygons reduced to their bounding box": 2,
                             "shapes skipped (circle, line, point, linestrip, mask)": 1}


def test_load_dataset_with_a_class_list_keeps_unused_classes(tmp_path, caplog):
    names = tmp_path / "names.txt"
    names.write_text("traffic light\ncafé\ndog\nbicycle\n", encoding="utf-8")
    with caplog.at_level("INFO"):
        dataset = load_dataset("labelme", ROOT, classes=str(names))
    assert dataset.classes == ["traffic light", "café", "dog", "bicycle"]
    assert [list(r.labels) for r in dataset.records] == [[1, 2], [], [2, 3]]
    assert "polygons reduced to their bounding box: 2" in caplog.text


def _write(folder, shapes, **extra):
    from PIL import Image

    Image.new("RGB", (20, 10)).save(folder / "x.png")
    data = {"shapes": shapes, "imagePath": "x.png", "imageHeight": 10, "imageWidth": 20, **extra}
    (folder / "x.json").write_text(json.dumps(data))
    return str(folder)


@pytest.mark.parametrize("shapes, message", [
    ([{"label": "a", "points": [[1, 1]], "shape_type": "rectangle"}], "shape 0 .*at least 2 points"),
    ([{"label": "", "points": [[1, 1], [2, 2]], "shape_type": "rectangle"}], "shape 0 has no label"),
    ([{"label": "a", "points": "x", "shape_type": "polygon"}], r"shape 0 \(a\): points must be"),
])
def test_bad_shapes_name_file_and_shape(tmp_path, shapes, message):
    with pytest.raises(DetectError, match=rf"x.json: {message}"):
        load_labelme(_write(tmp_path, shapes))


def test_label_outside_the_class_list(tmp_path):
    folder = _write(tmp_path, [{"label": "cat", "points": [[1, 1], [5, 5]], "shape_type": "rectangle"}])
    with pytest.raises(DetectError, match="x.json: shape 0 has label 'cat', not in the classes"):
        load_labelme(folder, classes=["dog"])


def test_not_labelme_and_empty_folder(tmp_path):
    (tmp_path / "x.json").write_text("[1, 2]")
    with pytest.raises(DetectError, match="not a LabelMe file"):
        load_labelme(str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DetectError, match="no LabelMe .json files"):
        load_labelme(str(tmp_path / "empty"))
    with pytest.raises(DetectError, match="LabelMe folder or file not found"):
        load_labelme(str(tmp_path / "missing"))
