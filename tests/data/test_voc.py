"""Pascal VOC reader: 1-based pixels, optional tags, missing <size>, class lists, errors."""

import logging
import os

import numpy as np
import pytest

from detect.data.formats import load_dataset
from detect.data.voc import VOC_CLASSES, load_voc
from detect.errors import DetectError

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")
VOC_ROOT = os.path.join(FIXTURES, "voc", "VOC2007")


def test_train_split_boxes_and_difficult():
    dataset = load_voc(VOC_ROOT, "train")
    assert dataset.classes == list(VOC_CLASSES) and len(dataset.classes) == 20
    assert dataset.category_ids == list(range(1, 21))
    first, second = dataset.records
    assert (first.image_id, first.file_name, first.width, first.height) == (1, "000001.jpg", 64, 48)
    assert first.path == os.path.join(VOC_ROOT, "JPEGImages", "000001.jpg")
    # 1-based inclusive -> 0-based continuous: (xmin - 1, ymin - 1, xmax, ymax)
    # dog (5, 10, 30, 40) -> (4, 9, 30, 40); person (40, 1, 64, 48) -> (39, 0, 64, 48),
    # the person's <part> (head) box is not an object.
    np.testing.assert_array_equal(first.boxes, [[4, 9, 30, 40], [39, 0, 64, 48]])
    # dog is VOC class 12, person 15
    np.testing.assert_array_equal(first.labels, [12, 15])
    np.testing.assert_array_equal(first.difficult, [False, True])
    np.testing.assert_array_equal(first.iscrowd, [False, False])
    # Float coordinates, no pose/truncated/difficult:
    # (10.5, 12.75, 50.25, 40.5) -> (9.5, 11.75, 50.25, 40.5); cat is class 8.
    assert second.image_id == 2
    np.testing.assert_array_equal(second.boxes, [[9.5, 11.75, 50.25, 40.5]])
    np.testing.assert_array_equal(second.labels, [8])
    np.testing.assert_array_equal(second.difficult, [False])


def test_missing_size_reads_header_with_warning(caplog):
    with caplog.at_level(logging.WARNING):
        dataset = load_voc(VOC_ROOT, "val")
    third, fourth = dataset.records
    assert (third.width, third.height) == (48, 32)  # the JPEG header of 000003.jpg
    assert "000003.xml: no valid <size>" in caplog.text
    assert "000004.xml" not in caplog.text
    # A full-image box in 1-based pixels (1, 1, 48, 32) -> (0, 0, 48, 32); bird is class 3.
    np.testing.assert_array_equal(third.boxes, [[0, 0, 48, 32]])
    np.testing.assert_array_equal(third.labels, [3])
    assert fourth.boxes.shape == (0, 4) and (fourth.width, fourth.height) == (40, 40)


def test_no_split_reads_every_xml():
    dataset = load_voc(VOC_ROOT, None)
    assert [r.file_name for r in dataset.records] == [f"00000{i}.jpg" for i in (1, 2, 3, 4)]
    assert [r.image_id for r in dataset.records] == [1, 2, 3, 4]


def test_forced_class_list():
    dataset = load_voc(VOC_ROOT, "train", classes=["person", "cat", "dog"])
    assert dataset.classes == ["person", "cat", "dog"]
    np.testing.assert_array_equal(dataset.records[0].labels, [3, 1])
    np.testing.assert_array_equal(dataset.records[1].labels, [2])


def test_forced_class_list_missing_a_name_names_the_xml():
    with pytest.raises(DetectError, match=r"000001.xml: unknown class 'person'"):
        load_voc(VOC_ROOT, "train", classes=["dog", "cat"])


def test_load_dataset_voc_with_class_file(tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\nperson\n\n")
    dataset = load_dataset("voc", VOC_ROOT, split="train", classes=str(names))
    assert dataset.classes == ["cat", "dog", "person"]
    np.testing.assert_array_equal(dataset.records[0].labels, [2, 3])


XML = """<annotation>
  <filename>{file_name}</filename>
  {size}
  {objects}
</annotation>"""
OBJECT = "<object><name>{name}</name><bndbox><xmin>{0}</xmin><ymin>{1}</ymin>" \
         "<xmax>{2}</xmax><ymax>{3}</ymax></bndbox></object>"


def _voc_root(tmp_path, xmls):
    """A VOC root with the given {id: xml text} and a train split listing them."""
    for folder in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
    for image_id, text in xmls.items():
        (tmp_path / "Annotations" / f"{image_id}.xml").write_text(text)
    (tmp_path / "ImageSets" / "Main" / "train.txt").write_text("\n".join(xmls) + "\n")
    return str(tmp_path)


def _xml(objects, file_name="a.jpg", size="<size><width>10</width><height>10</height></size>"):
    return XML.format(file_name=file_name, size=size, objects="".join(objects))


def test_custom_names_give_sorted_unique_classes(tmp_path):
    root = _voc_root(tmp_path, {
        "a": _xml([OBJECT.format(1, 1, 5, 5, name="widget"),
                   OBJECT.format(2, 2, 6, 6, name="gadget")]),
        "b": _xml([OBJECT.format(1, 1, 5, 5, name="widget")], file_name="b.jpg"),
    })
    dataset = load_voc(root, "train")
    assert dataset.classes == ["gadget", "widget"]
    np.testing.assert_array_equal(dataset.records[0].labels, [2, 1])


def test_filename_tag_falls_back_to_id_jpg(tmp_path):
    root = _voc_root(tmp_path, {"a": _xml([], file_name="renamed.png")})
    (tmp_path / "JPEGImages" / "a.jpg").write_bytes(b"")
    assert load_voc(root, "train").records[0].file_name == "a.jpg"


def test_missing_split_file(tmp_path):
    root = _voc_root(tmp_path, {})
    with pytest.raises(DetectError, match=r"split file not found: .*Main.test\.txt"):
        load_voc(root, "test")


def test_listed_xml_missing(tmp_path):
    root = _voc_root(tmp_path, {})
    (tmp_path / "ImageSets" / "Main" / "train.txt").write_text("000009\n")
    with pytest.raises(DetectError, match=r"000009.xml \(listed in .*train.txt\)"):
        load_voc(root, "train")


def test_invalid_xml_names_file(tmp_path):
    root = _voc_root(tmp_path, {"bad": "<annotation><object></annotation>"})
    with pytest.raises(DetectError, match=r"bad.xml: invalid XML"):
        load_voc(root, "train")


def test_object_without_bndbox_names_file_and_object(tmp_path):
    root = _voc_root(tmp_path, {"a": _xml(["<object><name>dog</name></object>"])})
    with pytest.raises(DetectError, match=r"a.xml: object 0 \(dog\) has no <bndbox>"):
        load_voc(root, "train")


def test_non_numeric_coordinate_names_file(tmp_path):
    root = _voc_root(tmp_path, {"a": _xml([OBJECT.format(1, "one", 5, 5, name="dog")])})
    with pytest.raises(DetectError, match=r"a.xml: object 0 \(dog\): <bndbox> needs numeric"):
        load_voc(root, "train")


def test_missing_root():
    with pytest.raises(DetectError, match="VOC root folder not found"):
        load_voc("/nonexistent/VOC", "train")
