"""torchvision's COCO detectors converted by `detect weights convert` detect what torchvision detects.

For each architecture, torchvision itself (in a subprocess of this interpreter, which `make
test` gives torchvision; DETECT_TORCHVISION_PYTHON names another interpreter) builds the model
with seeded random weights, saves them with torch.save(model.state_dict()) and runs on
scikit-image's astronaut, coffee and chelsea photos at score threshold 0
(scripts/torchvision_reference.py). The same file goes through `detect weights convert` and
`detect predict --score-threshold 0`; the detections of the two must match one to one.
MobileNetV3's random BatchNorm statistics are first set from the photos (--calibrate-bn):
with its own random init every score of that model ties.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from detect.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PHOTOS = ("astronaut", "coffee", "chelsea")
ARCHS = ("fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2", "fasterrcnn_mobilenet_v3_large_fpn",
         "maskrcnn_resnet50_fpn")


def torchvision_python():
    path = os.environ.get("DETECT_TORCHVISION_PYTHON") or sys.executable
    probe = subprocess.run([path, "-c", "import torchvision.models.detection"], capture_output=True)
    if probe.returncode != 0:
        message = f"torchvision does not import in {path}: `make install-test` installs it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def cli(*args):
    result = CliRunner().invoke(main, [os.fspath(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="session")
def photos(tmp_path_factory):
    import skimage.data
    import skimage.io

    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for name in PHOTOS:
        path = folder / f"{name}.png"
        skimage.io.imsave(path, getattr(skimage.data, name)(), check_contrast=False)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def converted(tmp_path_factory, photos):
    """arch -> (reference npz, model folder, detections.json items per photo), made once."""
    cache = {}

    def get(arch):
        if arch not in cache:
            out = tmp_path_factory.mktemp(arch)
            command = [torchvision_python(), os.path.join(ROOT, "scripts", "torchvision_reference.py"),
                       "--arch", arch, "--seed", "0", "--out", str(out / "reference"),
                       "--images", *map(str, photos)]
            if "mobilenet" in arch:
                command.append("--calibrate-bn")
            subprocess.run(command, check=True, capture_output=True)
            model_dir = out / "model"
            cli("weights", "convert", "--from", "torchvision", "--arch", arch,
                "--checkpoint", out / "reference" / "state_dict.pth", "--out", model_dir)
            cli("predict", model_dir, *photos, "--score-threshold", "0", "--out", out / "predictions")
            with open(out / "predictions" / "detections.json", encoding="utf-8") as f:
                items = {os.path.splitext(os.path.basename(entry["file"]))[0]: entry["detections"]
                         for entry in json.load(f)}
            cache[arch] = (np.load(out / "reference" / "reference.npz"), model_dir, items)
        return cache[arch]

    return get


def _iou(a, b):
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda z: (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def matched_fraction(ours, boxes, scores, labels, names, pairs=None):
    """Share of torchvision's detections matched one to one by ours: same class, IoU >= 0.99,
    score within 1e-3 (greedy, in our order). `pairs`: a list the (ours, theirs) index pairs
    are appended to."""
    if not len(boxes):
        return 1.0 if not ours else 0.0
    our_boxes = np.array([d["box"] for d in ours], np.float64).reshape(-1, 4)
    iou = _iou(our_boxes, boxes.astype(np.float64))
    used, matched = set(), 0
    for j, det in enumerate(ours):
        for k in np.argsort(-iou[j]):
            if iou[j, k] < 0.99:
                break
            if k not in used and names[labels[k] - 1] == det["class"] and abs(scores[k] - det["score"]) <= 1e-3:
                used.add(k)
                matched += 1
                if pairs is not None:
                    pairs.append((j, k))
                break
    return matched / len(boxes)


@pytest.mark.parametrize("arch", ARCHS)
def test_top_100_detections_match_torchvision_on_photos(arch, converted):
    from detect.zoo.torchvision import COCO_CLASS_NAMES

    reference, _, items = converted(arch)
    for i, name in enumerate(PHOTOS):
        boxes, scores, labels = (reference[f"{i}_{key}"] for key in ("boxes", "scores", "labels"))
        assert len(boxes) == 100 and len(items[name]) == 100  # score threshold 0: the 100 best
        assert matched_fraction(items[name], boxes, scores, labels, COCO_CLASS_NAMES) >= 0.98, name


@pytest.mark.parametrize("arch", ARCHS)
def test_backbone_and_fpn_features_equal_torchvision(arch, converted):
    from detect.models.loading import load_model_dir
    from detect.models.torchvision_backbones import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB

    reference, model_dir, _ = converted(arch)
    model, _ = load_model_dir(model_dir)
    for i in range(len(PHOTOS)):
        # torchvision's own normalized, padded input, back to the raw pixels our trunk takes.
        normalized = reference[f"{i}_input"].transpose(1, 2, 0)
        pixels = normalized * np.float32(IMAGENET_STD_RGB) + np.float32(IMAGENET_MEAN_RGB)
        ours = [np.asarray(f)[0] for f in model.features(pixels[None])]
        names = sorted((k for k in reference.files if k.startswith(f"{i}_features_")),
                       key=lambda k: (k.endswith("pool"), k))
        assert len(ours) == len(names)
        for feature, name in zip(ours, names):
            expected = reference[name].transpose(1, 2, 0)
            assert feature.shape == expected.shape, name
            assert np.abs(feature - expected).max() <= 1e-4 * np.abs(expected).max(), name


def test_resize_rule_gives_torchvision_sizes_for_odd_images():
    import tensorflow as tf

    from detect.data.transforms import torchvision_resized_shape

    # Portrait, landscape, square, tiny, huge, thin, and sides the floor cuts: 300 x 451 has
    # scale min(800 / 300, 1333 / 451) = 2.6666666666666665 -> 800.0 x 1202.67 -> 800 x 1202;
    # 899 x 1601: 1333 / 1601 wins -> 748.5 x 1333.0 -> 748 x 1333.
    sizes = [(300, 451), (451, 300), (512, 512), (1, 1), (3, 7), (17, 5000), (5000, 17), (4032, 3024),
             (3024, 4032), (480, 640), (720, 1280), (1080, 1920), (599, 799), (801, 1333), (333, 333),
             (1000, 1), (7, 8000), (2448, 3264), (123, 457), (899, 1601)]
    script = ("import sys, json, torch\n"
              "from torchvision.models.detection.transform import GeneralizedRCNNTransform\n"
              "t = GeneralizedRCNNTransform(800, 1333, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])\n"
              "t.eval()\n"
              "out = []\n"
              "for h, w in json.loads(sys.argv[1]):\n"
              "    images, _ = t([torch.zeros(3, h, w)])\n"
              "    out.append(list(images.image_sizes[0]))\n"
              "print(json.dumps(out))\n")
    done = subprocess.run([torchvision_python(), "-c", script, json.dumps(sizes)], check=True,
                          capture_output=True, text=True)
    expected = json.loads(done.stdout.strip().splitlines()[-1])
    ours = [[int(v) for v in torchvision_resized_shape(tf.constant(h), tf.constant(w), 800, 1333)] for h, w in sizes]
    assert ours == expected


def test_pasted_masks_match_torchvision(converted):
    """maskrcnn_resnet50_fpn: the masks of matched detections, pasted into the photo as
    torchvision pastes them (mask.paste: torchvision), against torchvision's own at 0.5.

    With random weights every mask logit is near 0, so a mask probability is near the 0.5
    threshold wherever numerical noise can flip a pixel; on the boxes of one or two pixels
    this model also predicts, one pixel is a large share of the mask. Measured: IoU >= 0.99
    for 88-98 of 100 masks a photo, every other mask within a 4-pixel-wide box."""
    from pycocotools import mask as mask_utils

    from detect.zoo.torchvision import COCO_CLASS_NAMES

    reference, _, items = converted("maskrcnn_resnet50_fpn")
    for i, name in enumerate(PHOTOS):
        boxes, scores, labels, masks = (reference[f"{i}_{key}"] for key in ("boxes", "scores", "labels", "masks"))
        pairs = []
        matched_fraction(items[name], boxes, scores, labels, COCO_CLASS_NAMES, pairs)
        good = 0
        for j, k in pairs:
            ours = mask_utils.decode(items[name][j]["segmentation"]).astype(bool)
            union = (ours | masks[k]).sum()
            iou = (ours & masks[k]).sum() / union if union else 1.0
            box = boxes[k]
            good += iou >= 0.99
            assert iou >= 0.99 or min(box[2] - box[0], box[3] - box[1]) < 4.5, (name, j, iou)
        assert good >= 0.85 * len(pairs), name


@pytest.mark.parametrize("backend, module", [("jax", "jax"), ("torch", "torch")])
def test_converted_model_matches_torchvision_on_other_backends(backend, module, converted, photos, tmp_path):
    """The converted ResNet-50 FPN, loaded and run by `detect predict` under JAX and PyTorch
    (RoIAlign aligned=False, torchvision's anchor rule and level mapper, per-image canvases),
    detects what torchvision detects on one photo, as on TensorFlow."""
    import importlib.util

    from detect.zoo.torchvision import COCO_CLASS_NAMES

    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed: make install-test")
    reference, model_dir, _ = converted("fasterrcnn_resnet50_fpn")
    index = PHOTOS.index("chelsea")
    env = {**os.environ, "KERAS_BACKEND": backend, "CUDA_VISIBLE_DEVICES": ""}
    out = tmp_path / "predictions"
    done = subprocess.run([sys.executable, "-m", "detect.cli", "predict", str(model_dir), str(photos[index]),
                           "--score-threshold", "0", "--out", str(out)], env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(out / "detections.json", encoding="utf-8") as f:
        (entry,) = json.load(f)
    boxes, scores, labels = (reference[f"{index}_{key}"] for key in ("boxes", "scores", "labels"))
    assert len(entry["detections"]) == 100
    assert matched_fraction(entry["detections"], boxes, scores, labels, COCO_CLASS_NAMES) >= 0.98
