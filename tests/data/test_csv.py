"""keras-retinanet CSV reader: grouping, negatives, class mapping, errors naming lines."""

import os

import numpy as np
import pytest
from PIL import Image

from detect.data.csv import load_csv
from detect.data.formats import load_dataset
from detect.errors import DetectError

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")
CSV_DIR = os.path.join(FIXTURES, "csv")
CSV_FILE = os.path.join(CSV_DIR, "annotations.csv")
CLASSES_FILE = os.path.join(CSV_DIR, "classes.csv")


def test_fixture_with_class_mapping():
    dataset = load_csv(CSV_FILE, CLASSES_FILE)
    # classes.csv: zebra,0 / apple,1 -> ascending id order, labels zebra 1, apple 2.
    assert dataset.classes == ["zebra", "apple"] and dataset.category_ids == [1, 2]
    a, c, b = dataset.records
    # a.png appears on lines 1 and 3: one record, boxes in file order.
    assert (a.image_id, a.file_name, a.width, a.height) == (1, "images/a.png", 64, 48)
    assert a.path == os.path.join(CSV_DIR, "images", "a.png")
    np.testing.assert_array_equal(a.boxes, [[10, 5, 30, 20], [32, 24, 64, 48]])
    np.testing.assert_array_equal(a.labels, [1, 2])
    # The subfolder image; its size 24x16 comes from the JPEG header.
    assert (c.image_id, c.file_name, c.width, c.height) == (2, "images/sub/c.jpg", 24, 16)
    np.testing.assert_array_equal(c.boxes, [[0, 0, 16, 16]])
    np.testing.assert_array_equal(c.labels, [2])
    # `images/b.png,,,,,` is a negative image.
    assert (b.image_id, b.width, b.height) == (3, 32, 32)
    assert b.boxes.shape == (0, 4) and b.labels.shape == (0,) and b.difficult.shape == (0,)


def test_fixture_without_mapping_sorts_names():
    dataset = load_csv(CSV_FILE)
    assert dataset.classes == ["apple", "zebra"]
    np.testing.assert_array_equal(dataset.records[0].labels, [2, 1])


def test_load_dataset_csv():
    dataset = load_dataset("csv", CSV_FILE, classes=CLASSES_FILE)
    assert len(dataset) == 3 and dataset.num_boxes() == 3


def _csv(tmp_path, text, name="ann.csv"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.fixture
def image_dir(tmp_path):
    Image.new("RGB", (20, 10)).save(tmp_path / "x.png")
    return tmp_path


def test_images_dir_overrides_csv_folder(tmp_path, image_dir):
    other = tmp_path / "elsewhere"
    other.mkdir()
    path = _csv(other, "x.png,1,2,3,4,dog\n")
    record = load_csv(path, images_dir=str(image_dir)).records[0]
    assert record.path == str(image_dir / "x.png") and (record.width, record.height) == (20, 10)


def test_blank_lines_skipped_and_float_coordinates(image_dir):
    path = _csv(image_dir, "\nx.png,1.5,2,3.25,4,dog\n\n")
    np.testing.assert_array_equal(load_csv(path).records[0].boxes, [[1.5, 2, 3.25, 4]])


def test_wrong_column_count_names_line(image_dir):
    path = _csv(image_dir, "x.png,1,2,3,4,dog\nx.png,1,2,3,4\n")
    with pytest.raises(DetectError, match=r"ann.csv:2: expected 6 columns"):
        load_csv(path)


def test_non_numeric_coordinate_names_line(image_dir):
    path = _csv(image_dir, "x.png,1,2,3,4,dog\nx.png,1,two,3,4,dog\n")
    with pytest.raises(DetectError, match=r"ann.csv:2: x1,y1,x2,y2 must be numbers"):
        load_csv(path)


def test_partial_empty_box_names_line(image_dir):
    path = _csv(image_dir, "x.png,1,,3,4,dog\n")
    with pytest.raises(DetectError, match=r"ann.csv:1: x1,y1,x2,y2 must be numbers"):
        load_csv(path)


def test_box_without_class_and_class_without_box(image_dir):
    with pytest.raises(DetectError, match=r"ann.csv:1: box without a class name"):
        load_csv(_csv(image_dir, "x.png,1,2,3,4,\n"))
    with pytest.raises(DetectError, match=r"ann.csv:1: class 'dog' given without a box"):
        load_csv(_csv(image_dir, "x.png,,,,,dog\n"))


def test_class_missing_from_mapping_names_line(image_dir):
    mapping = _csv(image_dir, "dog,0\n", name="classes.csv")
    path = _csv(image_dir, "x.png,1,2,3,4,dog\nx.png,5,5,8,8,cat\n")
    with pytest.raises(DetectError, match=r"ann.csv:2: class 'cat' is not in .*classes.csv"):
        load_csv(path, mapping)


def test_bad_class_mapping(image_dir):
    path = _csv(image_dir, "x.png,1,2,3,4,dog\n")
    with pytest.raises(DetectError, match=r"classes.csv:2: duplicate class name or id"):
        load_csv(path, _csv(image_dir, "dog,0\ncat,0\n", name="classes.csv"))
    with pytest.raises(DetectError, match=r"classes.csv:1: class id must be an integer"):
        load_csv(path, _csv(image_dir, "dog,zero\n", name="classes.csv"))


def test_missing_image_names_file_and_line(image_dir):
    path = _csv(image_dir, "x.png,1,2,3,4,dog\ngone.png,1,2,3,4,dog\n")
    with pytest.raises(DetectError, match=r"image not found: .*gone.png \(.*ann.csv:2\)"):
        load_csv(path)


def test_unreadable_image_names_file_and_line(image_dir):
    (image_dir / "junk.png").write_bytes(b"not an image at all")
    path = _csv(image_dir, "junk.png,1,2,3,4,dog\n")
    with pytest.raises(DetectError, match=r"junk.png.*ann.csv:1\)"):
        load_csv(path)


def test_missing_csv(tmp_path):
    with pytest.raises(DetectError, match="CSV file not found"):
        load_csv(str(tmp_path / "none.csv"))


def test_empty_csv_gives_empty_dataset(tmp_path):
    dataset = load_csv(_csv(tmp_path, ""))
    assert len(dataset) == 0 and dataset.classes == []
