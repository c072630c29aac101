"""`detect predict` on photos as phones and cameras write them: a file whose EXIF
orientation tag turns stored pixels into the displayed picture gets the detections of the
displayed picture (boxes in displayed pixels), folders and globs find upper-case
extensions, an undecodable file is one warning naming it, and an 8000x6000 photo is
predicted without many full-size copies. Untrained tiny model (conftest.make_model_dir):
the detections of identical displayed pixels must be identical, whatever they are.
"""

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import photo_files as pf
from detect.cli import main

CLASSES = ["box"]
# Lossless kinds whose displayed pixels equal the reference picture exactly (the palette
# kind holds two colours only, so it cannot carry the noisy picture).
EXACT = [k for k in pf.LOSSLESS if k != "palette_alpha_png"]


@pytest.fixture(scope="module")
def model_dir(make_model_dir):
    return str(make_model_dir(CLASSES))


def picture():
    """(48, 72) grey noise with the bright rectangle at pf.BOX: gives the untrained model
    something other than flat colour to score."""
    image = np.random.default_rng(5).integers(0, 120, (pf.HEIGHT, pf.WIDTH)).astype(np.uint8)
    x1, y1, x2, y2 = (int(v) for v in pf.BOX)
    image[y1:y2, x1:x2] = pf.BRIGHT
    return image


def predict(model_dir, sources, out):
    result = CliRunner().invoke(main, ["predict", model_dir, *sources, "--out", str(out),
                                       "--score-threshold", "0"])
    assert result.exit_code == 0, result.output
    entries = json.loads((out / "detections.json").read_text())
    return {os.path.basename(e["file"]): e["detections"] for e in entries}


def test_rotated_files_get_the_detections_of_the_displayed_picture(tmp_path, model_dir):
    folder = tmp_path / "photos"
    folder.mkdir()
    gray = picture()
    Image.fromarray(np.repeat(gray[..., None], 3, axis=2)).save(folder / "reference.png")
    names = [pf.write(folder, kind, picture=gray).name for kind in EXACT]
    found = predict(model_dir, [str(folder)], tmp_path / "out")
    assert sorted(found) == sorted(names + ["reference.png"])
    expected = found["reference.png"]
    assert expected, "the untrained model gives detections at threshold 0"
    for name in names:
        got = found[name]
        assert [d["class"] for d in got] == [d["class"] for d in expected], name
        np.testing.assert_allclose([d["score"] for d in got], [d["score"] for d in expected], atol=1e-5)
        np.testing.assert_allclose([d["box"] for d in got], [d["box"] for d in expected], atol=1e-2)
        # The drawn copy has the displayed size.
        assert Image.open(tmp_path / "out" / (os.path.splitext(name)[0] + ".jpg")).size == (pf.WIDTH, pf.HEIGHT)


def test_every_kind_is_predicted_in_displayed_pixels(tmp_path, model_dir):
    folder = tmp_path / "photos"
    folder.mkdir()
    names = [pf.write(folder, kind).name for kind in sorted(pf.KINDS)]
    found = predict(model_dir, [str(folder)], tmp_path / "out")
    assert sorted(found) == sorted(names)
    for name, detections in found.items():
        for det in detections:
            x1, y1, x2, y2 = det["box"]
            assert 0 <= x1 <= x2 <= pf.WIDTH and 0 <= y1 <= y2 <= pf.HEIGHT, name
        assert Image.open(tmp_path / "out" / (os.path.splitext(name)[0] + ".jpg")).size == (pf.WIDTH, pf.HEIGHT)


def test_globs_match_extensions_in_any_case(tmp_path, model_dir):
    folder = tmp_path / "camera"
    folder.mkdir()
    for kind in ("jpeg_o3", "jpeg_o8_upper", "jpeg_o6", "gray_jpeg", "bmp"):
        pf.write(folder, kind)
    assert sorted(predict(model_dir, [str(folder / "*.jpg")], tmp_path / "a")) == ["O8.JPG", "o3.jpg"]
    assert sorted(predict(model_dir, [str(folder / "*.jpeg")], tmp_path / "b")) == ["gray.JPEG", "o6.jpeg"]
    assert sorted(predict(model_dir, [str(folder / "*.bmp")], tmp_path / "c")) == ["plain_bmp.BMP"]
    assert len(predict(model_dir, [str(folder / "*")], tmp_path / "d")) == 5


def test_an_undecodable_file_is_one_warning_naming_it(tmp_path, model_dir, caplog):
    folder = tmp_path / "photos"
    folder.mkdir()
    pf.write(folder, "jpeg_o6")
    Image.fromarray(np.zeros((pf.HEIGHT, pf.WIDTH), np.float32)).save(folder / "depth.TIF")
    with caplog.at_level(logging.WARNING):
        found = predict(model_dir, [str(folder)], tmp_path / "out")
    assert list(found) == ["o6.jpeg"]
    lines = [r.getMessage() for r in caplog.records if "depth.TIF" in r.getMessage()]
    assert len(lines) == 1 and "mode F" in lines[0] and "\n" not in lines[0]


_LARGE_SCRIPT = r"""
import json, resource, sys
import numpy as np
from detect.inference.predictor import Predictor
from detect.data.images import read_image
predictor = Predictor.from_dir(sys.argv[1])
predictor.predict(np.zeros((60, 80, 3), np.uint8))  # traces the graphs first
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = predictor.predict(sys.argv[2], score_threshold=0.0)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
image = read_image(sys.argv[2])
print(json.dumps({"grown_mb": (peak - before) / 1024, "shape": image.shape,
                  "corner": image[:200, -200:].mean().item(), "rest": image[1000:, :-1000].mean().item(),
                  "boxes": result["boxes"].tolist()}))
"""


def test_an_8000_pixel_photo_costs_a_few_copies(tmp_path, model_dir):
    """6000x8000 stored, orientation 6 (displayed 6000 wide, 8000 high): one full-size
    RGB copy is 137 MB; before the strip decoding and the uint8 resize this took ~1.1 GB."""
    stored = np.full((6000, 8000), 40, np.uint8)
    stored[:200, :200] = 220  # stored top-left -> displayed top-right after a clockwise turn
    path = tmp_path / "panorama.JPG"
    Image.fromarray(stored).convert("RGB").save(path, quality=80, exif=pf.exif(6))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", _LARGE_SCRIPT, model_dir, str(path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["shape"] == [8000, 6000, 3]
    assert report["corner"] > 200 and report["rest"] < 60
    copy_mb = 8000 * 6000 * 3 / 2**20
    assert report["grown_mb"] < 5 * copy_mb, report["grown_mb"]
    for x1, y1, x2, y2 in report["boxes"]:
        assert 0 <= x1 <= x2 <= 6000 and 0 <= y1 <= y2 <= 8000
