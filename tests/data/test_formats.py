"""dataset.format yolo | labelme | cvat in a config: the splits load as `detect train` loads them."""

import os

import pytest

from detect.config import load_config
from detect.data.formats import FORMATS, load_dataset
from detect.errors import DetectError

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")
YOLO = os.path.join(FIXTURES, "yolo", "ultralytics", "data.yaml")


@pytest.mark.parametrize("fmt, train, val, extra, sizes", [
    ("yolo", {"annotations": YOLO, "split": "train"}, {"annotations": YOLO, "split": "val"}, "", (4, 1)),
    ("labelme", {"annotations": os.path.join(FIXTURES, "labelme")}, None, "", (3, 0)),
    ("cvat", {"annotations": os.path.join(FIXTURES, "cvat", "annotations.xml")}, None,
     "  classes: names.txt\n", (3, 0)),
])
def test_config_formats_load_their_splits(tmp_path, fmt, train, val, extra, sizes):
    from detect.data.splits import load_split

    def spec(entry):
        return "{" + ", ".join(f"{k}: '{v}'" for k, v in entry.items()) + "}"

    (tmp_path / "names.txt").write_text("traffic light\ncafé\nbicycle\n", encoding="utf-8")
    extra = extra.replace("names.txt", str(tmp_path / "names.txt"))
    text = f"dataset:\n  format: {fmt}\n{extra}  train: {spec(train)}\n"
    if val:
        text += f"  val: {spec(val)}\n"
    (tmp_path / "config.yaml").write_text(text, encoding="utf-8")
    config = load_config(str(tmp_path / "config.yaml"))
    loaded = [load_split(config, split) for split in ("train", "val")]
    assert tuple(len(d) if d is not None else 0 for d in loaded) == sizes
    assert loaded[0].num_boxes() > 0


def test_config_refuses_an_unknown_format(tmp_path):
    (tmp_path / "config.yaml").write_text("dataset: {format: kitti}\n")
    with pytest.raises(DetectError, match="kitti"):
        load_config(str(tmp_path / "config.yaml"))


def test_every_format_has_a_reader():
    assert FORMATS == ("coco", "voc", "csv", "yolo", "labelme", "cvat")
    for fmt in FORMATS:
        with pytest.raises(DetectError):
            load_dataset(fmt, os.path.join(FIXTURES, "does-not-exist"))
