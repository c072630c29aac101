"""End to end `detect predict` on a folder of mixed image types and on a video, with a
small untrained model (the outputs' structure is under test, not their accuracy)."""

import json
import os

import cv2
import numpy as np
import pytest
from PIL import Image

import detect
from detect.inference.run import run_predict
from detect.inference.video import VideoReader

CLASSES = ["circle", "rectangle", "triangle"]


@pytest.fixture(scope="module")
def model_dir(make_model_dir):
    return str(make_model_dir(CLASSES))


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / "rgb.png")
    Image.fromarray(rgb[..., 0]).save(folder / "gray.jpg")
    Image.fromarray(np.dstack([rgb, np.full((50, 70), 128, np.uint8)])).save(folder / "rgba.png")
    Image.fromarray(rgb).convert("P").save(folder / "palette.png")
    Image.fromarray((rng.integers(0, 65535, (40, 30))).astype(np.uint16)).save(folder / "deep16.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    return folder


def make_video(path, frames=12, size=(64, 48)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, size)
    for i in range(frames):
        frame = np.zeros((size[1], size[0], 3), np.uint8)
        frame[10:30, 2 * i : 2 * i + 20] = (0, 0, 255)
        writer.write(frame)
    writer.release()
    return path


def test_predict_folder_and_video(tmp_path, model_dir, image_folder):
    video = make_video(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    result = run_predict(model_dir, [str(image_folder), str(video)], str(out), score_threshold=0.0)
    assert result["frames"] == 6 + 12
    # One annotated JPEG per image, at the image's own size.
    for name, shape in [("rgb", (50, 70)), ("gray", (50, 70)), ("deep16", (40, 30)), ("cmyk", (50, 70))]:
        annotated = cv2.imread(str(out / f"{name}.jpg"))
        assert annotated.shape[:2] == shape
    detections = json.loads((out / "detections.json").read_text())
    assert len(detections) == 6
    for entry in detections:
        for det in entry["detections"]:
            assert det["class"] in CLASSES and 0.0 <= det["score"] <= 1.0
            x1, y1, x2, y2 = det["box"]
            assert 0 <= x1 <= x2 <= 70 and 0 <= y1 <= y2 <= 50
    coco = json.loads((out / "detections_coco.json").read_text())
    assert len(coco) == sum(len(e["detections"]) for e in detections)
    for result in coco:
        assert set(result) >= {"image_id", "category_id", "bbox", "score"}
        assert 1 <= result["image_id"] <= 6 and 1 <= result["category_id"] <= 3
        assert result["bbox"][2] >= 0 and result["bbox"][3] >= 0
    # The video is re-encoded frame for frame, with one JSON line per frame.
    with VideoReader(str(out / "clip.mp4")) as reader:
        assert (reader.width, reader.height) == (64, 48)
        assert sum(1 for _ in reader) == 12
    lines = (out / "clip.jsonl").read_text().splitlines()
    assert len(lines) == 12
    first = json.loads(lines[0])
    assert first["frame"] == 0 and set(first) == {"frame", "timestamp", "detections"}
    assert [json.loads(line)["frame"] for line in lines] == list(range(12))


def test_python_api_boxes_in_image_pixels(model_dir, image_folder):
    predictor = detect.load(model_dir)
    result = predictor.predict(str(image_folder / "rgb.png"))
    assert set(result) == {"boxes", "scores", "labels", "class_names"}
    assert result["boxes"].shape[1:] == (4,)
    if len(result["boxes"]):
        assert result["boxes"][:, 2].max() <= 70 and result["boxes"][:, 3].max() <= 50
    assert len(result["class_names"]) == len(result["labels"])


def test_class_filter_and_bad_class(tmp_path, model_dir, image_folder):
    from detect.errors import DetectError

    out = tmp_path / "only_circles"
    run_predict(model_dir, [str(image_folder)], str(out), score_threshold=0.0, classes=["circle"])
    for entry in json.loads((out / "detections.json").read_text()):
        assert all(d["class"] == "circle" for d in entry["detections"])
    with pytest.raises(DetectError, match="unknown class 'hexagon'"):
        run_predict(model_dir, [str(image_folder)], str(tmp_path / "x"), classes=["hexagon"])


def test_show_without_display_is_a_clear_error(tmp_path, model_dir, image_folder, monkeypatch):
    from detect.errors import DetectError

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(DetectError, match="display"):
        run_predict(model_dir, [str(image_folder)], str(tmp_path / "y"), show=True)
    assert not os.path.exists(tmp_path / "y")
