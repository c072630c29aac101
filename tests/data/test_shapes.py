import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from skimage.measure import label as connected_components
from skimage.measure import regionprops

from detect.data.shapes import CLASS_NAMES, generate_shapes, render_image
from detect.errors import DetectError


def _components(image):
    """Shape pixels of a plain (white) render as 8-connected regions."""
    shape_pixels = (image != 255).any(axis=2)
    return regionprops(connected_components(shape_pixels, connectivity=2))


@pytest.mark.parametrize("image_size", [64, 128])
def test_boxes_are_tight_around_drawn_pixels(image_size):
    for seed in range(25):
        image, boxes, labels = render_image(np.random.default_rng(seed), image_size, 4, plain=True)
        regions = _components(image)
        # regionprops bbox is (min_row, min_col, max_row, max_col) with exclusive ends,
        # i.e. xyxy = (min_col, min_row, max_col, max_row) in continuous edges.
        pixel_boxes = sorted((r.bbox[1], r.bbox[0], r.bbox[3], r.bbox[2]) for r in regions)
        assert sorted(map(tuple, boxes.tolist())) == pixel_boxes, f"seed {seed}"
        assert boxes.dtype == np.float32 and labels.dtype == np.int32
        assert ((boxes[:, 2:] - boxes[:, :2]) > 0).all()
        assert ((boxes >= 0) & (boxes <= image_size)).all()


def test_labels_match_the_drawn_shape():
    # Fill ratio of a shape in its tight box: rectangle 1, disk ~ pi/4 = 0.785 (up to
    # ~0.86 for small pixelated disks), triangle ~ 1/2.
    expected = {1: (0.75, 0.90), 2: (1.0, 1.0), 3: (0.40, 0.60)}
    seen = set()
    for seed in range(40):
        image, boxes, labels = render_image(np.random.default_rng(seed), 128, 4, plain=True)
        by_box = {(r.bbox[1], r.bbox[0], r.bbox[3], r.bbox[2]): r for r in _components(image)}
        for box, label in zip(boxes.tolist(), labels.tolist()):
            region = by_box[tuple(box)]
            low, high = expected[label]
            assert low <= region.area / region.area_bbox <= high, (seed, box, label)
            seen.add(label)
    assert seen == {1, 2, 3}


def test_shapes_stand_out_from_textured_background():
    for seed in range(10):
        plain, plain_boxes, plain_labels = render_image(
            np.random.default_rng(seed), 96, 4, plain=True
        )
        image, boxes, labels = render_image(np.random.default_rng(seed), 96, 4)
        # Shapes are placed before the background is drawn, so the geometry is shared.
        np.testing.assert_array_equal(boxes, plain_boxes)
        np.testing.assert_array_equal(labels, plain_labels)
        assert image.shape == (96, 96, 3) and image.dtype == np.uint8
        for region in _components(plain):
            rows, cols = region.coords[:, 0], region.coords[:, 1]
            assert len(np.unique(plain[rows, cols], axis=0)) == 1  # one flat colour
            mask = np.zeros((96, 96), dtype=np.uint8)
            mask[rows, cols] = 1
            ring = cv2.dilate(mask, np.ones((5, 5), np.uint8)).astype(bool) & (mask == 0)
            inside = image[mask == 1].mean(axis=0)
            around = image[ring].mean(axis=0)
            # Colours are drawn >= 100 RGB units from the background under the shape.
            assert np.linalg.norm(inside - around) > 60, (seed, region.bbox)


def test_negative_render_has_empty_arrays():
    image, boxes, labels = render_image(np.random.default_rng(0), 64, 0)
    assert image.shape == (64, 64, 3)
    assert boxes.shape == (0, 4) and boxes.dtype == np.float32
    assert labels.shape == (0,) and labels.dtype == np.int32


def _generate(out_dir, **kwargs):
    arguments = dict(num_images=12, image_size=64, seed=0, val_fraction=0.25,
                     negative_fraction=0.25, progress=False)
    arguments.update(kwargs)
    return generate_shapes(out_dir, **arguments)


def test_generate_writes_coco_layout(tmp_path):
    result = _generate(tmp_path / "shapes")
    root = tmp_path / "shapes"
    assert result["images_dir"] == str(root / "images")
    assert result["num_images"] == {"train": 9, "val": 3}  # 12 * 0.25 = 3 in val
    assert result["categories"] == list(CLASS_NAMES)

    image_ids, negatives = set(), 0
    for split in ("train", "val"):
        assert result["annotations"][split] == str(root / "annotations" / f"{split}.json")
        coco = COCO(result["annotations"][split])
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(CLASS_NAMES)
        assert coco.getCatIds() == [1, 2, 3]
        assert len(coco.getImgIds()) == result["num_images"][split]
        assert len(coco.getAnnIds()) == result["num_objects"][split]
        for info in coco.loadImgs(coco.getImgIds()):
            assert re.fullmatch(rf"{split}/\d{{6}}\.jpg", info["file_name"])
            with Image.open(root / "images" / info["file_name"]) as image:
                assert image.size == (64, 64) and image.mode == "RGB"
            assert (info["width"], info["height"]) == (64, 64)
            annotations = coco.loadAnns(coco.getAnnIds(imgIds=info["id"]))
            negatives += not annotations
            for ann in annotations:
                x, y, w, h = ann["bbox"]
                assert all(isinstance(v, float) for v in ann["bbox"])
                assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= 64 and y + h <= 64
                assert ann["area"] == w * h and ann["iscrowd"] == 0
                assert ann["category_id"] in (1, 2, 3)
        image_ids |= set(coco.getImgIds())
    assert image_ids == set(range(1, 13))
    assert negatives == 3  # round(12 * 0.25)
    assert sum(result["num_negatives"].values()) == 3


def test_no_negatives_without_negative_fraction(tmp_path):
    result = _generate(tmp_path, negative_fraction=0.0)
    assert result["num_negatives"] == {"train": 0, "val": 0}
    for path in result["annotations"].values():
        content = json.loads(Path(path).read_text())
        annotated = {a["image_id"] for a in content["annotations"]}
        assert annotated == {i["id"] for i in content["images"]}


def _all_bytes(root):
    files = sorted(p for p in Path(root).rglob("*") if p.is_file())
    return {p.relative_to(root): p.read_bytes() for p in files}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    _generate(tmp_path / "a", seed=3)
    _generate(tmp_path / "b", seed=3)
    _generate(tmp_path / "c", seed=4)
    first, second, third = (_all_bytes(tmp_path / name) for name in "abc")
    assert first == second
    assert len(first) == 12 + 2
    assert first[Path("annotations/train.json")] != third[Path("annotations/train.json")]
    assert any(first[key] != third.get(key) for key in first if key.suffix == ".jpg")


def test_image_size_respected(tmp_path):
    result = _generate(tmp_path, num_images=3, image_size=48, val_fraction=0.0)
    assert result["num_images"] == {"train": 3, "val": 0}
    for path in (tmp_path / "images" / "train").glob("*.jpg"):
        with Image.open(path) as image:
            assert image.size == (48, 48)


@pytest.mark.parametrize("bad", [
    {"num_images": 0}, {"image_size": 8}, {"val_fraction": 1.0},
    {"negative_fraction": 1.5}, {"max_shapes": 0}, {"seed": -1},
])
def test_bad_arguments_raise_detect_error(tmp_path, bad):
    with pytest.raises(DetectError, match=next(iter(bad))):
        _generate(tmp_path, **bad)


# --------------------------------------------------------------------------- multiscale preset
def test_multiscale_images_hold_2_to_20_shapes_of_every_coco_size():
    from detect.data.shapes_multiscale import CLASS_NAMES as MS_CLASSES, render_multiscale

    areas, counts, labels_seen = [], [], set()
    for seed in range(12):
        image, boxes, labels = render_multiscale(np.random.default_rng(seed), 320)
        assert image.shape == (320, 320, 3) and image.dtype == np.uint8
        assert boxes.shape == (len(labels), 4) and labels.dtype == np.int32
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 320).all() and (boxes[:, 2:] > boxes[:, :2]).all()
        counts.append(len(labels))
        labels_seen.update(labels.tolist())
        areas += ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).tolist()
    # 2..20 shapes requested; a placement may fail after 20 trials, so allow one fewer.
    assert min(counts) >= 1 and max(counts) <= 20 and np.mean(counts) > 5
    assert labels_seen == set(range(1, len(MS_CLASSES) + 1))
    areas = np.array(areas)
    # COCO ranges: small < 32^2 = 1024 <= medium < 96^2 = 9216 <= large.
    assert (areas < 1024).any() and ((areas >= 1024) & (areas < 9216)).any() and (areas >= 9216).any()
    sides = np.sqrt(areas)
    assert sides.min() >= 3 and sides.max() <= 2 * 200  # 6..200 px boxes, aspect up to 2


def test_multiscale_negative_image_has_no_shapes():
    from detect.data.shapes_multiscale import render_multiscale

    image, boxes, labels = render_multiscale(np.random.default_rng(0), 320, negative=True)
    assert image.shape == (320, 320, 3) and boxes.shape == (0, 4) and labels.shape == (0,)


def test_multiscale_cli_preset_is_deterministic_under_seed(tmp_path):
    from click.testing import CliRunner

    from detect.cli import main

    def run(out, seed):
        result = CliRunner().invoke(main, ["data", "shapes", "--preset", "multiscale", "--out", str(out),
                                           "--num-images", "6", "--image-size", "96", "--seed", str(seed)])
        assert result.exit_code == 0, result.output
        return {p.relative_to(out): p.read_bytes() for p in sorted(Path(out).rglob("*")) if p.is_file()}

    first, again, other = run(tmp_path / "a", 3), run(tmp_path / "b", 3), run(tmp_path / "c", 4)
    assert first == again
    assert first != other
    coco = json.loads(first[Path("annotations/train.json")])
    assert [c["name"] for c in coco["categories"]] == ["circle", "rectangle", "triangle", "ellipse", "cross"]
    assert coco["images"][0]["width"] == 96


def test_default_preset_is_unchanged_by_the_multiscale_option(tmp_path):
    from click.testing import CliRunner

    from detect.cli import main

    result = CliRunner().invoke(main, ["data", "shapes", "--out", str(tmp_path / "d"), "--num-images", "4"])
    assert result.exit_code == 0, result.output
    expected = generate_shapes(tmp_path / "e", num_images=4, image_size=128, seed=0, progress=False)
    for split in ("train", "val"):
        written = json.loads((tmp_path / "d" / "annotations" / f"{split}.json").read_text())
        assert written == json.loads(Path(expected["annotations"][split]).read_text())
