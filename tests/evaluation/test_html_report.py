"""report.html and the galleries: what `detect evaluate` shows a person."""

import base64
import json
import os
import re
import subprocess

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from error_cases import HEIGHT, WIDTH, tide_case

from detect.cli import main
from detect.evaluation.galleries import DET_COLOR, ERROR_COLOR, GT_COLOR, draw_error_image, worst_images

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """`detect evaluate --detections --annotations --images` on the error case; returns (out, CLI output)."""
    root = tmp_path_factory.mktemp("case")
    gt, dets = tide_case(0, num_random=12)
    (root / "images").mkdir()
    for image in gt["images"]:
        picture = np.full((HEIGHT, WIDTH, 3), 235, np.uint8)
        for ann in (a for a in gt["annotations"] if a["image_id"] == image["id"]):
            x, y, w, h = (int(v) for v in ann["bbox"])
            cv2.rectangle(picture, (x, y), (x + w, y + h), (60, 60, 200), cv2.FILLED)
        cv2.imwrite(str(root / "images" / image["file_name"]), picture)
    (root / "gt.json").write_text(json.dumps(gt))
    (root / "dets.json").write_text(json.dumps(dets))
    out = root / "out"
    result = CliRunner().invoke(main, ["evaluate", "--detections", str(root / "dets.json"), "--annotations",
                                       str(root / "gt.json"), "--images", str(root / "images"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_evaluate_writes_errors_galleries_and_prints_the_report_last(evaluated):
    out, output = evaluated
    assert output.strip().splitlines()[-1] == f"report: {out / 'report.html'}"
    assert "TIDE dAP50  Cls" in output
    errors = json.loads((out / "errors.json").read_text())
    assert set(errors["dAP"]) == {"Cls", "Loc", "Both", "Dupe", "Bkg", "Miss"}
    assert {"FalsePos", "FalseNeg", "per_class", "AP50"} <= set(errors)
    assert all(0 <= v <= 1 for v in errors["dAP"].values())
    assert not any(key.startswith("_") for key in errors)
    galleries = sorted(os.listdir(out / "galleries"))
    for kind in ("bkg", "loc", "cls", "miss"):
        assert f"{kind}_1.jpg" in galleries
    assert not [name for name in os.listdir(out) if name.endswith(".tmp")]


def test_report_is_self_contained_and_every_image_decodes(evaluated):
    page = (evaluated[0] / "report.html").read_text()
    # No external resource: outside the inlined data: URIs no URL at all, and no script.
    text = re.sub(r'"data:[^"]*"', '""', page)
    assert not re.search(r"(https?:|src=\"|href=\"|url\()\s*/?/", text, re.I)
    assert "http" not in text and "<script" not in text and "<link" not in text
    sources = re.findall(r'<img [^>]*src="([^"]+)"', page)
    # pr curves, confusion matrix, error chart and at least one gallery a main error type
    assert len(sources) >= 3 + 6
    for src in sources:
        header, payload = src.split(",", 1)
        assert header in ("data:image/png;base64", "data:image/jpeg;base64")
        image = cv2.imdecode(np.frombuffer(base64.b64decode(payload), np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape[0] > 50 and image.shape[1] > 50
    for section in ("Metrics", "Per class", "Where AP is lost", "Precision / recall", "Confusion matrix",
                    "Galleries"):
        assert f"<h2>{section}</h2>" in page
    assert "@media print" in page


_CHECK_IMAGES = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  document.body.setAttribute("data-images", images.length);
  document.body.setAttribute("data-broken", images.filter(i => !i.complete || i.naturalWidth === 0).length);
});
</script>"""


def _chromium(*args, tmp_path):
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run",
               f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"renders report.html in {CHROMIUM}: sudo apt-get install chromium")
def test_report_renders_in_headless_chromium(evaluated, tmp_path):
    out = evaluated[0]
    shot = tmp_path / "shot.png"
    _chromium(f"--screenshot={shot}", "--window-size=1280,2000", (out / "report.html").as_uri(), tmp_path=tmp_path)
    pixels = cv2.imread(str(shot))
    assert pixels.shape[:2] == (2000, 1280)
    # Not blank: text, tables and plots give many dark pixels and many distinct colours.
    assert (pixels.mean(axis=2) < 128).mean() > 0.01
    assert len(np.unique(pixels.reshape(-1, 3) // 16, axis=0)) > 30

    # Every <img> loads: a copy of the page with a script that counts broken images.
    probe = out / "probe.html"
    probe.write_text((out / "report.html").read_text().replace("</body>", _CHECK_IMAGES + "</body>"))
    dom = _chromium("--dump-dom", "--virtual-time-budget=5000", probe.as_uri(), tmp_path=tmp_path).stdout
    probe.unlink()
    images = re.search(r'data-images="(\d+)"', dom)
    broken = re.search(r'data-broken="(\d+)"', dom)
    assert images and broken, dom[:500]
    assert int(images.group(1)) >= 9 and int(broken.group(1)) == 0


def test_worst_images_rank_by_score_and_missed_objects_by_area():
    errors = [
        {"type": "Bkg", "image_id": 1, "score": 0.4}, {"type": "Bkg", "image_id": 2, "score": 0.9},
        {"type": "Bkg", "image_id": 1, "score": 0.95}, {"type": "Loc", "image_id": 3, "score": 0.99},
        {"type": "Miss", "image_id": 3, "area": 100.0}, {"type": "Miss", "image_id": 4, "area": 900.0},
    ]
    # Image 1's worst background error (0.95) beats image 2's (0.9).
    assert [(i, len(e)) for i, e in worst_images(errors, "Bkg")] == [(1, 2), (2, 1)]
    assert [i for i, _ in worst_images(errors, "Miss")] == [4, 3]
    assert [i for i, _ in worst_images(errors, "Bkg", limit=1)] == [1]
    assert worst_images(errors, "Dupe") == []


def test_gallery_picture_draws_gt_detections_and_the_error_in_their_colours():
    image = np.zeros((100, 100, 3), np.uint8)
    gt = [{"category_id": 1, "bbox": [10, 10, 30, 30]}]
    dets = [{"category_id": 1, "bbox": [60, 60, 30, 30], "score": 0.8},
            {"category_id": 1, "bbox": [60, 10, 30, 30], "score": 0.1}]  # below the 0.3 threshold
    error = {"type": "Bkg", "class": 1, "score": 0.8, "bbox": [60, 60, 30, 30]}
    picture = draw_error_image(image, gt, dets, [], {1: "a"}, min_side=100)
    # Boxes cover x 10..39 and 60..89; left edges at columns 10 and 60, row 30 / 80.
    np.testing.assert_array_equal(picture[30, 10], GT_COLOR)
    np.testing.assert_array_equal(picture[80, 60], DET_COLOR)
    assert not picture[30, 60].any()  # the 0.1 detection is not drawn
    highlighted = draw_error_image(image, gt, dets, [error], {1: "a"}, min_side=200)
    assert highlighted.shape == (200, 200, 3)  # enlarged x2 for legible tags
    np.testing.assert_array_equal(highlighted[160, 120], ERROR_COLOR)  # x 60*2, row 80*2


def test_large_photos_are_shrunk_in_galleries_small_images_enlarged():
    from detect.evaluation.galleries import gallery_scale

    assert gallery_scale(3000, 4000) == 1024 / 4000  # 12 MP photo: longer side 1024
    assert gallery_scale(100, 50) == 320 / 50  # shorter side 320
    assert gallery_scale(600, 800) == 1.0
    image = np.zeros((1500, 3000, 3), np.uint8)
    gt = [{"category_id": 1, "bbox": [1000, 500, 1000, 600]}]
    picture = draw_error_image(image, gt, [], [], {1: "a"})
    # scale 1024 / 3000: 1500 x 3000 -> 512 x 1024; the box's left edge x 1000 -> 341.3,
    # its bottom y 1100 -> 375.5: column 341, row 370 is on the edge.
    assert picture.shape == (512, 1024, 3)
    np.testing.assert_array_equal(picture[370, 341], GT_COLOR)


def test_evaluate_model_dir_writes_errors_json_and_a_report_with_the_model(tmp_path, make_model_dir):
    import yaml

    from detect.data.shapes import CLASS_NAMES, generate_shapes

    generate_shapes(str(tmp_path / "shapes"), num_images=10, image_size=64, seed=0, progress=False)
    model_dir = make_model_dir(list(CLASS_NAMES), tmp_path / "model")
    (model_dir / "history.csv").write_text("epoch,loss,val_loss\n0,2.0,2.2\n1,1.5,1.9\n")
    config = tmp_path / "eval.yaml"
    config.write_text(yaml.safe_dump({
        "dataset": {"val": {"annotations": str(tmp_path / "shapes/annotations/val.json"),
                            "images": str(tmp_path / "shapes/images")}},
        "input": {"min_size": 64, "max_size": 64}}))
    out = tmp_path / "eval"
    result = CliRunner().invoke(main, ["evaluate", str(model_dir), "--config", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == f"report: {out / 'report.html'}"
    errors = json.loads((out / "errors.json").read_text())
    assert set(errors["per_class"]) == set(CLASS_NAMES)
    # The untrained model (score threshold 0, 5 boxes an image) makes errors; their dAP sum is
    # what a perfect detector would add: at most 1 - AP50.
    assert sum(errors["counts"].values()) > 0
    assert sum(errors["dAP"].values()) <= 1 - errors["AP50"] + 1e-6
    page = (out / "report.html").read_text()
    assert "<h2>Model</h2>" in page and "config.yaml" in page and 'alt="training curves"' in page
    assert (out / "loss_curve.png").exists()  # drawn from history.csv: the folder had no loss_curve.png
    assert os.listdir(out / "galleries")  # images from the model's dataset


def test_images_option_errors_are_one_line(tmp_path):
    gt, dets = tide_case(0, num_random=0)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    runner = CliRunner()
    result = runner.invoke(main, ["evaluate", "--detections", str(tmp_path / "dets.json"), "--annotations",
                                  str(tmp_path / "gt.json"), "--images", str(tmp_path / "nothere"),
                                  "--out", str(tmp_path / "out")])
    assert result.exit_code != 0 and "error: --images: folder not found" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(main, ["evaluate", "some_model", "--images", str(tmp_path)])
    assert result.exit_code != 0 and "--images goes with --detections" in result.output
