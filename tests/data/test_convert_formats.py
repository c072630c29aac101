"""Round trips COCO -> voc | yolo | csv -> COCO (boxes, classes used or not, negatives), and the CLI."""

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from detect.cli import main
from detect.data.convert import convert
from detect.data.formats import load_dataset
from detect.errors import DetectError

# name -> (width, height, [(category id, [x, y, w, h])]); category 11 is used by no box.
IMAGES = {
    "a.png": (64, 48, [(5, [10.25, 5.5, 20.0, 15.75]), (9, [0.0, 0.0, 64.0, 48.0])]),
    "nested dir/é x.jpg": (80, 60, [(9, [40.0, 30.0, 30.5, 20.0]), (5, [1.0, 2.0, 3.0, 4.0])]),
    "negative.png": (32, 32, []),
}
CATEGORIES = [(5, "traffic light"), (9, "café"), (11, "never used")]


def write_coco_set(root):
    """A COCO json at root/annotations/annotations.json with its images under root/images."""
    images, annotations = [], []
    for image_id, (name, (width, height, boxes)) in enumerate(IMAGES.items(), start=1):
        path = root / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (width, height), (90, 120, 30)).save(path)
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
        for cat_id, bbox in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cat_id,
                                "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": 0})
    categories = [{"id": i, "name": n} for i, n in CATEGORIES]
    path = root / "annotations" / "annotations.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return str(path)


def _by_size(dataset):
    return {(r.width, r.height): r for r in dataset.records}


@pytest.mark.parametrize("fmt", ["voc", "yolo", "csv"])
def test_coco_to_format_to_coco(tmp_path, fmt):
    src = write_coco_set(tmp_path)
    original = load_dataset("coco", src)
    middle = str(tmp_path / fmt / ("ann.csv" if fmt == "csv" else ""))
    convert("coco", src, middle, to=fmt, image_mode="copy")
    # The class list the writer put beside the annotations keeps the unused class.
    read_back = {
        "voc": dict(split="train", classes=os.path.join(middle, "classes.txt")),
        "yolo": dict(split="train"),
        "csv": dict(classes=str(tmp_path / fmt / "classes.csv")),
    }[fmt]
    source = os.path.join(middle, "data.yaml") if fmt == "yolo" else middle
    back = tmp_path / "back.json"
    convert(fmt, source, str(back), **read_back)
    again = load_dataset("coco", str(back), images=_images_root(fmt, middle, tmp_path))
    assert again.classes == ["traffic light", "café", "never used"]
    assert len(again) == 3
    before, after = _by_size(original), _by_size(again)
    for size, record in before.items():
        np.testing.assert_allclose(after[size].boxes, record.boxes, atol=1e-3)
        np.testing.assert_array_equal(after[size].labels, record.labels)
    assert len(after[(32, 32)].boxes) == 0


def _images_root(fmt, middle, tmp_path):
    return {"voc": os.path.join(middle, "JPEGImages"), "yolo": os.path.join(middle, "images", "train"),
            "csv": str(tmp_path / "images")}[fmt]


def test_crowd_boxes_are_left_out_of_formats_without_them(tmp_path, caplog):
    coco = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "fixtures", "coco", "annotations", "instances.json")
    with caplog.at_level("WARNING"):
        convert("coco", coco, str(tmp_path / "y"), to="yolo")
    assert "1 crowd boxes (ignore regions) left out" in caplog.text
    dataset = load_dataset("yolo", str(tmp_path / "y" / "data.yaml"), split="train")
    # b.jpg had one box and one crowd region.
    assert [len(r.boxes) for r in dataset.records] == [2, 1, 0]


def test_unknown_output_format(tmp_path):
    with pytest.raises(DetectError, match="unknown output format 'kitti'"):
        convert("coco", write_coco_set(tmp_path), str(tmp_path / "x"), to="kitti")


def test_cli_convert_to_yolo_then_inspect(tmp_path):
    src = write_coco_set(tmp_path)
    out = tmp_path / "yolo"
    result = CliRunner().invoke(main, ["data", "convert", "--from", "coco", "--to", "yolo", "--subset", "val",
                                       "--image-mode", "copy", src, str(out)])
    assert result.exit_code == 0, result.output
    assert f"3 images written to {out} as yolo" in result.output
    assert not (out / "images" / "val" / "a.png").is_symlink()
    result = CliRunner().invoke(main, ["data", "inspect", "--format", "yolo", "--annotations",
                                       str(out / "data.yaml"), "--split", "val"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["data", "inspect", "--format", "yolo", "--annotations",
                                       str(out / "data.yaml"), "--split", "train"])
    assert result.exit_code == 2 and "no 'train' entry" in result.output


def test_cli_csv_classes_option_keeps_unused_classes(tmp_path):
    src = write_coco_set(tmp_path)
    convert("coco", src, str(tmp_path / "csv" / "ann.csv"), to="csv")
    back = tmp_path / "back.json"
    result = CliRunner().invoke(main, ["data", "convert", "--from", "csv", "--classes",
                                       str(tmp_path / "csv" / "classes.csv"), str(tmp_path / "csv" / "ann.csv"),
                                       str(back)])
    assert result.exit_code == 0, result.output
    names = [c["name"] for c in json.loads(back.read_text())["categories"]]
    assert names == ["traffic light", "café", "never used"]
