"""Bad inputs, one test per case: each is refused with one clear line naming the file, key
or box, or skipped and counted where DESIGN.md says so (degenerate boxes are dropped,
undecodable images met while training or predicting are skipped). Several cases run
through the CLI: one `error:` line on stderr, exit code 2, no traceback."""

import json
import logging
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image, ImageFile

from detect.cli import main
from detect.data.coco import load_coco
from detect.data.pipeline import SkippedImages, make_dataset
from detect.data.formats import load_dataset
from detect.data.records import Dataset, Record
from detect.data.validate import validate
from detect.errors import DetectError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_CLASSES = ["circle", "rectangle", "triangle"]


# --------------------------------------------------------------------------- helpers
def save_jpeg(path, width=64, height=48, seed=0):
    """A JPEG with one bright rectangle; returns its (4,) xyxy box."""
    rng = np.random.default_rng(seed)
    pixels = np.full((height, width, 3), 40, np.uint8)
    x1, y1 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
    x2, y2 = x1 + int(rng.integers(8, width // 2)), y1 + int(rng.integers(8, height // 2))
    pixels[y1:y2, x1:x2] = (220, 80, 40)
    with open(path, "wb") as f:
        Image.fromarray(pixels).save(f, format="JPEG", quality=90)
    return [x1, y1, x2, y2]


def write_coco(path, entries, classes=("a", "b")):
    """entries: [(file_name, width, height, [(xywh bbox, category_id), ...])] -> COCO json."""
    images, annotations = [], []
    for image_id, (file_name, width, height, objects) in enumerate(entries, start=1):
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for bbox, category_id in objects:
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id, "category_id": category_id,
                 "bbox": list(bbox), "area": bbox[2] * bbox[3], "iscrowd": 0}
            )
    categories = [{"id": k, "name": name} for k, name in enumerate(classes, start=1)]
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return str(path)


def shapes_coco(folder, count, classes=("a", "b"), name="annotations.json"):
    """`count` 64x48 JPEGs with one box each, and their COCO json beside them."""
    os.makedirs(folder, exist_ok=True)
    entries = []
    for i in range(count):
        x1, y1, x2, y2 = save_jpeg(os.path.join(folder, f"{i:04d}.jpg"), seed=i)
        entries.append((f"{i:04d}.jpg", 64, 48, [([x1, y1, x2 - x1, y2 - y1], 1 + i % len(classes))]))
    return write_coco(os.path.join(folder, name), entries, classes)


def tiny_config(path, train, val=None, **training):
    """A Faster R-CNN config small enough to train on a CPU in seconds."""
    config = {
        "_base_": os.path.join(ROOT, "configs/faster_rcnn/tiny_shapes.yaml"),
        "backbone": {"width": 8},
        "dataset": {"train": {"annotations": train, "images": None}, "val": {"annotations": val, "images": None}},
        "input": {"min_size": 64, "max_size": 64, "cache": False},
        "rpn": {"anchor_sizes": [16, 32], "channels": 16, "pre_nms_top_n_train": 200, "post_nms_top_n_train": 64,
                "post_nms_top_n_test": 32},
        "roi": {"batch_size": 16, "head_dim": 32},
        "training": {"epochs": 1, "batch_size": 8, "warmup_steps": 2, "time_budget_minutes": None, "val_every": 1,
                     **training},
        "callbacks": {"tensorboard": {"enabled": False}},
    }
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f)
    return str(path)


def png_header_only(width, height):
    """A PNG whose IHDR claims width x height RGB pixels, with (almost) no pixel data."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def cli(*args):
    return CliRunner().invoke(main, [os.fspath(a) for a in args])


def assert_one_line_error(result, *fragments):
    """Exit code 2, no traceback, stderr holds exactly one line `error: ...` with the fragments."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def model_dir(make_model_dir):
    """An untrained tiny Faster R-CNN folder (model.keras + config.yaml), 3 classes."""
    return make_model_dir(MODEL_CLASSES)


# --------------------------------------------------------------------------- boxes and labels
def test_dummy_zero_boxes_are_dropped_with_a_warning_and_counted(tmp_path, caplog):
    save_jpeg(tmp_path / "one.jpg")
    save_jpeg(tmp_path / "two.jpg")
    path = write_coco(
        tmp_path / "ann.json",
        [
            ("one.jpg", 64, 48, [([0, 0, 0, 0], 1), ([10, 10, 20, 15], 2)]),
            ("two.jpg", 64, 48, [([0, 0, 0, 0], 1)]),
        ],
    )
    with caplog.at_level(logging.WARNING):
        dataset, summary = validate(load_coco(path))
    # Two [0, 0, 0, 0] boxes dropped; "two.jpg" keeps no box and becomes a negative image.
    assert (summary.boxes, summary.dropped, summary.negatives) == (1, 2, 1)
    one, two = dataset.records
    np.testing.assert_array_equal(one.boxes, [[10, 10, 30, 25]])  # xywh [10, 10, 20, 15] -> xyxy
    np.testing.assert_array_equal(one.labels, [2])
    assert two.boxes.shape == (0, 4) and two.labels.shape == (0,)
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == 2
    assert "one.jpg: box 0 has zero width or height [0, 0, 0, 0]: dropped" in dropped[0]
    # The training pipeline sees the negative image with padding rows only (label -1, box 0).
    batch = next(iter(make_dataset(dataset, batch_size=2, min_size=48, max_size=64, max_boxes=4)))
    np.testing.assert_array_equal(batch["gt_labels"][1].numpy(), [-1, -1, -1, -1])
    np.testing.assert_array_equal(batch["gt_boxes"][1].numpy(), np.zeros((4, 4)))


@pytest.mark.parametrize("label", [0, 3])
def test_label_zero_or_above_k_names_file_and_box(tmp_path, label):
    save_jpeg(tmp_path / "img.jpg")
    record = Record(1, "img.jpg", str(tmp_path / "img.jpg"), 64, 48,
                    boxes=[[1, 1, 9, 9], [2, 2, 20, 20]], labels=[1, label])
    dataset = Dataset(classes=["a", "b"], records=[record], source="memory")
    with pytest.raises(DetectError) as caught:
        validate(dataset)
    assert str(caught.value) == f"{tmp_path / 'img.jpg'}: box 1 has label {label}, outside the 2 classes 1..2"


def test_coco_category_outside_the_class_list_through_the_cli(tmp_path):
    # In COCO files a label above K is a category id the file does not declare.
    save_jpeg(tmp_path / "img.jpg")
    path = write_coco(tmp_path / "ann.json", [("img.jpg", 64, 48, [([1, 1, 8, 8], 3)])])
    result = cli("data", "inspect", "--format", "coco", "--annotations", path)
    assert_one_line_error(result, "ann.json", "annotation id 1", "unknown category_id 3")


# --------------------------------------------------------------------------- class lists
def test_model_and_dataset_classes_differ_through_the_cli(tmp_path, model_dir):
    shapes_coco(tmp_path / "val", 2, classes=("cat", "dog"))
    config = tmp_path / "eval.yaml"
    config.write_text(yaml.safe_dump({"dataset": {"val": {"annotations": str(tmp_path / "val/annotations.json")}},
                                      "input": {"min_size": 64, "max_size": 64}}))
    result = cli("evaluate", model_dir, "--config", config, "--out", tmp_path / "eval")
    line = assert_one_line_error(result, "model classes", "circle", "cat", "annotations.json")
    assert line == (
        "error: model classes ['circle', 'rectangle', 'triangle'] differ from the classes of "
        f"{tmp_path / 'val/annotations.json'}: ['cat', 'dog'] ('cat' is not a class of the model)"
    )
    assert not (tmp_path / "eval").exists()


def test_train_and_val_class_lists_differ_through_the_cli(tmp_path):
    train = shapes_coco(tmp_path / "train", 8, classes=("a", "b"))
    val = shapes_coco(tmp_path / "val", 2, classes=("a", "c"))
    config = tiny_config(tmp_path / "config.yaml", train, val)
    result = cli("train", config, "--out", tmp_path / "model")
    assert_one_line_error(result, "train and val class lists differ", "['a', 'b']", "['a', 'c']",
                          "train/annotations.json", "val/annotations.json")
    assert not (tmp_path / "model").exists()  # refused before anything is written


# --------------------------------------------------------------------------- images
def test_one_by_one_image_is_upscaled_and_predicted(tmp_path, model_dir):
    import detect

    Image.fromarray(np.full((1, 1, 3), 200, np.uint8)).save(tmp_path / "dot.png")
    path = write_coco(tmp_path / "ann.json", [("dot.png", 1, 1, [([0, 0, 1, 1], 1)])])
    dataset = load_dataset("coco", path)
    np.testing.assert_array_equal(dataset.records[0].boxes, [[0, 0, 1, 1]])
    batch = next(iter(make_dataset(dataset, batch_size=1, min_size=64, max_size=64, max_boxes=2)))
    # The 1x1 image is upscaled 64x to the 64x64 canvas, and its box with it.
    np.testing.assert_array_equal(batch["image_shape"][0].numpy(), [64, 64])
    np.testing.assert_allclose(batch["scale"][0].numpy(), [64, 64])
    np.testing.assert_allclose(batch["gt_boxes"][0, 0].numpy(), [0, 0, 64, 64])
    np.testing.assert_array_equal(batch["images"][0, 0, 0].numpy(), [200, 200, 200])

    result = detect.load(str(model_dir)).predict(str(tmp_path / "dot.png"))
    assert result["boxes"].shape[1:] == (4,) and len(result["boxes"]) <= 5  # max_detections 5
    assert np.isfinite(result["boxes"]).all()
    assert result["boxes"].min() >= 0 and result["boxes"].max() <= 1  # clipped to the 1x1 image


def test_header_claiming_20000x20000_is_refused_without_decoding(tmp_path, monkeypatch, model_dir):
    from detect.inference.run import run_predict

    (tmp_path / "images").mkdir()
    bomb = tmp_path / "images" / "bomb.png"
    bomb.write_bytes(png_header_only(20000, 20000))  # 1.2 GB of RGB pixels claimed in 100 bytes
    save_jpeg(tmp_path / "images" / "fine.jpg")
    decode, decoded = ImageFile.ImageFile.load, []

    def recording_load(self):
        decoded.append(self.size)  # recorded, not raised: readers turn decoder errors into skips
        return decode(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording_load)
    path = write_coco(tmp_path / "ann.json", [("images/bomb.png", 20000, 20000, [([1, 1, 8, 8], 1)])])
    result = cli("data", "inspect", "--format", "coco", "--annotations", path)
    assert_one_line_error(result, "image too large", "bomb.png")

    # Predicting on a folder skips it (with a warning) and counts it.
    out = run_predict(str(model_dir), [str(tmp_path / "images")], str(tmp_path / "out"), score_threshold=0.0)
    assert (out["frames"], out["skipped"]) == (1, 1)
    assert sorted(os.listdir(tmp_path / "out")) == ["detections.json", "detections_coco.json", "fine.jpg"]
    assert set(decoded) == {(64, 48)}  # fine.jpg only: not one pixel of the 20000x20000 image


@pytest.mark.parametrize("fmt, name", [("coco", "annotations.json"), ("csv", "annotations.csv")])
def test_empty_annotation_file_names_it(tmp_path, fmt, name):
    path = tmp_path / name
    path.write_bytes(b"")
    with pytest.raises(DetectError) as caught:
        load_dataset(fmt, str(path))
    assert str(caught.value) == f"{path}: the annotation file is empty"
    result = cli("data", "inspect", "--format", fmt, "--annotations", path)
    assert result.stderr == f"error: {path}: the annotation file is empty\n"
    assert result.exit_code == 2


def test_empty_voc_xml_names_it(tmp_path):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "Annotations" / "000001.xml").write_bytes(b"")
    with pytest.raises(DetectError) as caught:
        load_dataset("voc", str(tmp_path))
    assert str(caught.value) == f"{tmp_path / 'Annotations' / '000001.xml'}: the annotation file is empty"


VOC_XML = """<annotation>
  <filename>{name}</filename>
  <object><name>dog</name><difficult>0</difficult>
    <bndbox><xmin>5</xmin><ymin>6</ymin><xmax>20</xmax><ymax>30</ymax></bndbox></object>
</annotation>"""


def test_voc_xml_without_size_reads_the_image_header(tmp_path, caplog):
    for folder in ("Annotations", "JPEGImages"):
        (tmp_path / folder).mkdir()
    save_jpeg(tmp_path / "JPEGImages" / "000001.jpg", width=70, height=50)
    (tmp_path / "Annotations" / "000001.xml").write_text(VOC_XML.format(name="000001.jpg"))
    with caplog.at_level(logging.WARNING):
        dataset = load_dataset("voc", str(tmp_path), classes=["dog"])
    record = dataset.records[0]
    assert (record.width, record.height) == (70, 50)  # from the JPEG header
    np.testing.assert_array_equal(record.boxes, [[4, 5, 20, 30]])  # VOC 1-based: x1 = xmin - 1
    assert any("000001.xml: no valid <size>; reading the size from" in r.getMessage() for r in caplog.records)

    # Without <size> and without the image there is nothing to measure: the image is named.
    (tmp_path / "Annotations" / "000002.xml").write_text(VOC_XML.format(name="000002.jpg"))
    with pytest.raises(DetectError, match=r"image file not found: .*000002\.jpg"):
        load_dataset("voc", str(tmp_path), classes=["dog"])


def truncate_jpeg(path):
    """Cut a JPEG in the middle of its pixel data: the header stays readable."""
    data = path.read_bytes()
    scan = data.index(b"\xff\xda")  # start of the entropy-coded pixels (SOS marker)
    path.write_bytes(data[: scan + (len(data) - scan) // 2])


def test_truncated_jpeg_met_during_training_is_skipped_and_counted(tmp_path, caplog, monkeypatch):
    from detect.config import load_config
    from detect.training.train import train

    # 120 images: one unreadable image is 0.8%, under the 1% at which training stops.
    train_json = shapes_coco(tmp_path / "data", 120)
    truncate_jpeg(tmp_path / "data" / "0007.jpg")  # loading accepts it: its header is whole
    config = load_config(tiny_config(tmp_path / "config.yaml", train_json, epochs=1, batch_size=8))
    monkeypatch.setenv("DETECT_QUIET", "1")
    with caplog.at_level(logging.WARNING):
        result = train(config, str(tmp_path / "model"))
    summary = json.loads((tmp_path / "model" / "train_summary.json").read_text())
    assert summary["skipped_images"] == 1
    assert os.path.isfile(result["model"])
    warnings = [r.getMessage() for r in caplog.records if "skipped unreadable image" in r.getMessage()]
    assert len(warnings) == 1 and "0007.jpg" in warnings[0] and "truncated" in warnings[0]


def test_more_than_one_percent_truncated_jpegs_stop_training_with_one_line(tmp_path, monkeypatch):
    # 2 of 120 images = 1.7% unreadable: more than the 1% that training tolerates.
    train_json = shapes_coco(tmp_path / "data", 120)
    for name in ("0003.jpg", "0050.jpg"):
        truncate_jpeg(tmp_path / "data" / name)
    monkeypatch.setenv("DETECT_QUIET", "1")
    result = cli("train", tiny_config(tmp_path / "config.yaml", train_json, epochs=1), "--out", tmp_path / "model")
    line = assert_one_line_error(result, "training stopped: 2 of 120 images are unreadable (more than 1%), e.g. ")
    assert "data/0003.jpg" in line and "data/0050.jpg" in line


def test_non_utf8_and_space_file_names(tmp_path, model_dir):
    from detect.inference.run import run_predict

    folder = tmp_path / "my images"
    folder.mkdir()
    spaced = "photo 1.jpg"
    latin1 = os.fsdecode(b"caf\xe9 2.jpg")  # not UTF-8: the byte 0xE9 alone
    save_jpeg(folder / spaced)
    with open(os.path.join(os.fsencode(folder), b"caf\xe9 2.jpg"), "wb") as f:
        Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(f, format="JPEG")

    # A COCO file can name both (json.dump writes the undecodable byte as \\udce9).
    path = write_coco(folder / "ann.json", [(spaced, 64, 48, [([4, 4, 10, 10], 1)]), (latin1, 64, 48, [])])
    dataset = load_dataset("coco", path)
    skipped = SkippedImages(len(dataset))
    batches = list(make_dataset(dataset, batch_size=2, min_size=48, max_size=64, skipped=skipped))
    assert skipped.count == 0 and batches[0]["images"].shape[0] == 2

    out = tmp_path / "out dir"
    result = cli("predict", model_dir, folder, "--out", out, "--score-threshold", "0")
    assert result.exit_code == 0, result.output
    written = sorted(os.listdir(os.fsencode(out)))
    assert written == [b"caf\xe9 2.jpg", b"detections.json", b"detections_coco.json", b"photo 1.jpg"]
    names = sorted(os.path.basename(entry["file"]) for entry in json.loads((out / "detections.json").read_text()))
    assert names == sorted([latin1, spaced])

    # An error about such a file is still one printable line.
    missing = os.path.join(os.fsdecode(os.fsencode(folder)), os.fsdecode(b"gone \xff.jpg"))
    result = cli("predict", model_dir, missing, "--out", out)
    line = assert_one_line_error(result, "source not found", "gone ")
    line.encode("utf-8")


def test_unknown_config_key_names_it_and_suggests_the_closest(tmp_path):
    base = os.path.join(ROOT, "configs/faster_rcnn/tiny_shapes.yaml")
    config = tmp_path / "config.yaml"
    config.write_text(f"_base_: {base}\ntraining:\n  learning_rat: 0.01\n")
    result = cli("train", config, "--out", tmp_path / "model")
    line = assert_one_line_error(result)
    assert line == "error: unknown config key `training.learning_rat` (did you mean `training.learning_rate`?)"
    assert not (tmp_path / "model").exists()

    # The same from a real terminal: stdout empty, stderr exactly that line.
    detect = os.path.join(os.path.dirname(sys.executable), "detect")
    config.write_text(f"_base_: {base}\n")
    proc = subprocess.run([detect, "train", str(config), "--set", "trainig.epochs=2"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == "error: unknown config key `trainig` (did you mean `training`?)\n"
