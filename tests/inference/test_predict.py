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


def _detections(out):
    """{image or frame: [(class, score, box), ...]} from detections.json and *.jsonl."""
    found = {}
    for entry in json.loads((out / "detections.json").read_text()):
        found[os.path.basename(entry["file"])] = entry["detections"]
    for line in (out / "clip.jsonl").read_text().splitlines():
        record = json.loads(line)
        found[f"clip#{record['frame']}"] = record["detections"]
    return found


def test_batches_give_the_detections_of_one_frame_at_a_time(tmp_path, model_dir, image_folder):
    video = make_video(tmp_path / "clip.mp4", frames=13)  # 6 images + 13 frames: batches of 8, 8, 3
    one = run_predict(model_dir, [str(image_folder), str(video)], str(tmp_path / "one"), score_threshold=0.0,
                      batch_size=1)
    batched = run_predict(model_dir, [str(image_folder), str(video)], str(tmp_path / "batched"), score_threshold=0.0)
    assert (one["batch_size"], batched["batch_size"]) == (1, 8)
    assert one["frames"] == batched["frames"] == 19
    assert batched["frames_per_second"] > 0 and 0 < batched["model_seconds"] <= batched["seconds"]
    expected, got = _detections(tmp_path / "one"), _detections(tmp_path / "batched")
    assert list(got) == list(expected)  # same images and frames, in the same order
    assert sum(len(d) for d in got.values()) > 0
    for key in expected:
        assert [d["class"] for d in got[key]] == [d["class"] for d in expected[key]], key
        np.testing.assert_allclose([d["score"] for d in got[key]], [d["score"] for d in expected[key]], atol=2e-4)
        np.testing.assert_allclose([d["box"] for d in got[key]], [d["box"] for d in expected[key]], atol=0.02)


def test_predictor_prepares_as_the_pipeline_and_traces_the_model_once(model_dir):
    from detect.data.pipeline import prepare_image
    from detect.data.splits import pad_value

    predictor = detect.load(model_dir)
    # The training / evaluation pipelines pad with the backbone's mean colour (tiny: 127.5).
    mean = pad_value("tiny")
    rng = np.random.default_rng(1)
    sizes = [(64, 64), (48, 200), (300, 90), (7, 5)]  # square, landscape, portrait, tiny
    images = [rng.integers(0, 256, size + (3,), dtype=np.uint8) for size in sizes]
    for image in images:
        expected = prepare_image(image, min_size=64, max_size=64, canvas_size=None, pad_value=mean)
        got = predictor.prepare(image)
        assert set(got) == set(expected)
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    # (48, 200) resized to 64 wide is 15 rows high: the rows below are padding.
    padding = predictor.prepare(images[1])["images"][0, 20:]
    np.testing.assert_array_equal(padding, np.broadcast_to(mean, (44, 64, 3)))
    predictor.predict_batch(images[:3])
    predictor.predict_batch(images[3:])  # a smaller last batch
    predictor.predict(images[0])
    # A square canvas is its own transpose: one traced model function, traced once.
    assert list(predictor._detect) == [(64, 64)]
    assert predictor._detect[(64, 64)].tracing_count() == 1


def test_an_error_while_writing_stops_predict(tmp_path, model_dir, image_folder, monkeypatch):
    import detect.inference.run as run

    calls = []

    def failing_draw(image, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("No space left on device")
        return image

    monkeypatch.setattr(run, "draw_detections", failing_draw)
    video = make_video(tmp_path / "clip.mp4", frames=40)
    with pytest.raises(OSError, match="No space left"):
        run_predict(model_dir, [str(image_folder), str(video)], str(tmp_path / "out"), batch_size=2)
    assert len(calls) < 46  # stopped early instead of drawing every frame


def test_cli_reports_frames_per_second_before_where_outputs_went(tmp_path, model_dir, image_folder):
    import re

    from click.testing import CliRunner

    from detect.cli import main

    out = tmp_path / "pred"
    result = CliRunner().invoke(main, ["predict", model_dir, str(image_folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert re.fullmatch(r"6 frames in \d+\.\d s: \d+\.\d frames/s \(batches of 8; model \d+\.\d s\)", lines[-2]), lines
    assert lines[-1].endswith(f"written to {out}")
