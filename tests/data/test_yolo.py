"""YOLO reader (ultralytics and darknet layouts) on hand-written fixtures, its errors, and the writer."""

import os

import numpy as np
import pytest
import yaml

from detect.data.formats import load_dataset
from detect.data.yolo import label_path, load_yolo, write_yolo
from detect.errors import DetectError

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "yolo")
ULTRA = os.path.join(FIXTURES, "ultralytics")
DARKNET = os.path.join(FIXTURES, "darknet")
NAMES = ["traffic light", "café", "dog", "never used"]


def _by_name(dataset):
    return {r.file_name: r for r in dataset.records}


def test_ultralytics_train_split_boxes_negatives_and_polygons():
    dataset = load_yolo(os.path.join(ULTRA, "data.yaml"), split="train")
    # names as a dict; the class no box uses is kept.
    assert dataset.classes == NAMES
    records = _by_name(dataset)
    assert sorted(records) == ["images/train/a.png", "images/train/empty label.jpg",
                               "images/train/negative.png", "images/train/nested dir/café b.jpg"]
    a = records["images/train/a.png"]
    assert (a.width, a.height) == (64, 48)
    # 0 0.5 0.5 0.25 0.5 on 64x48: centre (32, 24), size 16x24 -> (24, 12, 40, 36);
    # 1 0.125 0.25 0.25 0.5: centre (8, 12), size 16x24 -> (0, 0, 16, 24).
    np.testing.assert_allclose(a.boxes, [[24, 12, 40, 36], [0, 0, 16, 24]])
    np.testing.assert_array_equal(a.labels, [1, 2])
    b = records["images/train/nested dir/café b.jpg"]
    # polygon x 0.1 0.5 0.3 * 80 -> 8..40, y 0.1 0.2 0.5 * 60 -> 6..30;
    # 0 0.75 0.5 0.5 1.0: centre (60, 30), size 40x60 -> (40, 0, 80, 60).
    np.testing.assert_allclose(b.boxes, [[8, 6, 40, 30], [40, 0, 80, 60]], atol=1e-4)
    np.testing.assert_array_equal(b.labels, [2, 1])
    # no label file, and an empty one: both negatives.
    assert len(records["images/train/negative.png"].boxes) == 0
    assert len(records["images/train/empty label.jpg"].boxes) == 0
    assert dataset.notes["polygons reduced to their bounding box"] == 1


def test_ultralytics_val_from_a_list_file_and_names_as_a_list():
    listed = load_yolo(os.path.join(ULTRA, "data.yaml"), split="val")
    folder = load_yolo(os.path.join(ULTRA, "data_list.yaml"), split="val")
    assert folder.classes == NAMES
    for dataset in (listed, folder):
        (record,) = dataset.records
        assert record.file_name == "images/val/ç.png"
        # 2 0.5 0.5 0.2 0.25 on 50x40: centre (25, 20), size 10x10 -> (20, 15, 30, 25).
        np.testing.assert_allclose(record.boxes, [[20, 15, 30, 25]])
        np.testing.assert_array_equal(record.labels, [3])


def test_load_dataset_validates_yolo(caplog):
    with caplog.at_level("INFO"):
        dataset = load_dataset("yolo", os.path.join(ULTRA, "data.yaml"), split="train")
    assert dataset.num_boxes() == 4
    assert "polygons reduced to their bounding box: 1" in caplog.text
    assert "(2 without boxes)" in caplog.text


def test_darknet_folder_and_list_with_a_names_file():
    names = os.path.join(DARKNET, "obj.names")
    for source in (DARKNET, os.path.join(DARKNET, "train.txt")):
        dataset = load_dataset("yolo", source, classes=names)
        assert dataset.classes == ["traffic light", "café"]
        records = _by_name(dataset)
        assert sorted(records) == ["sub/z.png", "x y.jpg"]
        # 1 0.5 0.5 0.2 0.4 on 100x50: centre (50, 25), size 20x20 -> (40, 15, 60, 35).
        np.testing.assert_allclose(records["x y.jpg"].boxes, [[40, 15, 60, 35]])
        assert len(records["sub/z.png"].boxes) == 0


def test_darknet_without_names_is_an_error():
    with pytest.raises(DetectError, match="needs its class names"):
        load_yolo(DARKNET)


def test_label_path_swaps_the_last_images_folder(tmp_path):
    image = tmp_path / "images" / "a" / "images" / "x.jpg"
    (tmp_path / "images" / "a" / "labels").mkdir(parents=True)
    assert label_path(str(image)) is None
    (tmp_path / "images" / "a" / "labels" / "x.txt").write_text("")
    assert label_path(str(image)) == str(tmp_path / "images" / "a" / "labels" / "x.txt")


def _one_image_dataset(tmp_path, label_text, names="names: [a, b]"):
    from PIL import Image

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.new("RGB", (10, 10)).save(tmp_path / "images" / "x.png")
    (tmp_path / "labels" / "x.txt").write_text(label_text)
    (tmp_path / "data.yaml").write_text(f"train: images\n{names}\n")
    return str(tmp_path / "data.yaml")


def test_class_index_out_of_range_names_file_and_line(tmp_path):
    path = _one_image_dataset(tmp_path, "0 0.5 0.5 0.1 0.1\n\n2 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DetectError, match=r"labels/x.txt:3: class index 2 is outside 0..1"):
        load_yolo(path, split="train")


@pytest.mark.parametrize("line, message", [
    ("0 0.5 0.5 0.1", "got 4 fields"),
    ("0 0.5 0.5 0.1 abc", "must be numbers"),
    ("0.5 0.5 0.5 0.1 0.1", "must be an integer"),
])
def test_malformed_lines_name_file_and_line(tmp_path, line, message):
    path = _one_image_dataset(tmp_path, line + "\n")
    with pytest.raises(DetectError, match=rf"x.txt:1: .*{message}"):
        load_yolo(path, split="train")


@pytest.mark.parametrize("names, split, message", [
    ("names: [a, b]\nval: images", None, "no split given"),
    ("names: [a, b]", "val", "no 'val' entry"),
    ("names: {0: a, 2: b}", "train", "keys must be 0..1"),
    ("names: [a, a]", "train", "duplicate class names"),
    ("nc: 3\nnames: [a, b]", "train", "nc is 3"),
])
def test_bad_data_yaml(tmp_path, names, split, message):
    path = _one_image_dataset(tmp_path, "", names)
    with pytest.raises(DetectError, match=message):
        load_yolo(path, split=split)


def test_writer_layout_and_read_back(tmp_path):
    dataset = load_dataset("yolo", os.path.join(ULTRA, "data.yaml"), split="train")
    write_yolo(dataset, str(tmp_path / "out"), subset="train", image_mode="copy")
    val = load_dataset("yolo", os.path.join(ULTRA, "data.yaml"), split="val")
    write_yolo(val, str(tmp_path / "out"), subset="val")
    with open(tmp_path / "out" / "data.yaml", encoding="utf-8") as f:
        data = yaml.safe_load(f)
    assert data == {"names": dict(enumerate(NAMES)), "train": "images/train", "val": "images/val"}
    copied = tmp_path / "out" / "images" / "train" / "images" / "train" / "nested dir" / "café b.jpg"
    assert copied.is_file() and not copied.is_symlink()
    assert (tmp_path / "out" / "images" / "val" / "images" / "val" / "ç.png").is_symlink()
    # A negative gets an empty label file, where the swap of the last images/ puts it.
    assert (tmp_path / "out" / "images" / "train" / "labels" / "train" / "negative.txt").read_text() == ""
    again = load_dataset("yolo", str(tmp_path / "out" / "data.yaml"), split="train")
    assert again.classes == NAMES
    for before, after in zip(dataset.records, again.records):
        np.testing.assert_allclose(after.boxes, before.boxes, atol=1e-3)
        np.testing.assert_array_equal(after.labels, before.labels)


def test_writer_refuses_a_data_yaml_with_other_names(tmp_path):
    dataset = load_dataset("yolo", os.path.join(ULTRA, "data.yaml"), split="val")
    (tmp_path / "data.yaml").write_text("names: [x]\ntrain: images/train\n")
    with pytest.raises(DetectError, match="other class names"):
        write_yolo(dataset, str(tmp_path))


def test_files_not_in_utf8_name_the_file_and_byte(tmp_path):
    # A Latin-1 "é" (0xe9) in the names: one line naming data.yaml and byte 23
    # ("train: images\n" is 14 bytes, "names: [a" 9 more).
    path = _one_image_dataset(tmp_path, "0 0.5 0.5 0.1 0.1\n")
    (tmp_path / "data.yaml").write_bytes(b"train: images\nnames: [a\xe9]\n")
    with pytest.raises(DetectError, match=r"data.yaml: not a UTF-8 text file \(byte 23"):
        load_yolo(path, split="train")
    (tmp_path / "data.yaml").write_text("train: images\nnames: [a, b]\n")
    (tmp_path / "labels" / "x.txt").write_bytes(b"0 0.5 0.5 0.1 0.1 \xff\n")
    with pytest.raises(DetectError, match=r"x.txt: not a UTF-8 text file"):
        load_yolo(path, split="train")


def test_a_byte_order_mark_is_read_as_windows_tools_write_it(tmp_path):
    # The BOM (EF BB BF) before "0 0.5 ..." and before "train:" is dropped, not parsed as a class.
    path = _one_image_dataset(tmp_path, "")
    (tmp_path / "labels" / "x.txt").write_bytes(b"\xef\xbb\xbf0 0.5 0.5 0.2 0.4\n")
    (tmp_path / "data.yaml").write_bytes(b"\xef\xbb\xbftrain: images\nnames: [a, b]\n")
    record = load_yolo(path, split="train").records[0]
    # 10x10 image: centre (5, 5), 2 x 4 pixels -> xyxy (4, 3, 6, 7).
    np.testing.assert_allclose(record.boxes, [[4, 3, 6, 7]], atol=1e-5)
    np.testing.assert_array_equal(record.labels, [1])
