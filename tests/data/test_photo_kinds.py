"""Photos as phones and cameras write them (EXIF-rotated JPEG/PNG/TIFF/WebP, CMYK, 16-bit,
palette + transparency, grey + alpha, BMP, upper-case extensions): the header size, the
decoded pixels, `detect data inspect --verify` and the training pipeline agree on the
displayed orientation, so a box drawn in a labelling tool lies on the object.

The files come from tests/photo_files.py: a dark 72x48 picture with a bright rectangle at
BOX (displayed pixels), stored turned the other way where an orientation tag is set.
"""

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageOps

import photo_files as pf
from detect.cli import main
from detect.data import images
from detect.data.formats import load_dataset
from detect.data.images import image_size, read_image
from detect.data.pipeline import make_dataset

ROTATED_JPEGS = ("jpeg_o3", "jpeg_o6", "jpeg_o8_upper")


def brightness(image, box, margin=2):
    """(mean inside the box shrunk by margin, mean outside the box grown by margin) of an
    (H, W, 3) image; box xyxy pixels."""
    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    inside = image[y1 + margin : y2 - margin, x1 + margin : x2 - margin].mean()
    outside = np.ones(image.shape[:2], bool)
    outside[max(0, y1 - margin) : y2 + margin, max(0, x1 - margin) : x2 + margin] = False
    return float(inside), float(image[outside].mean())


def write_labelme(folder, kinds):
    """One LabelMe JSON a kind, the rectangle drawn where the tool shows it (displayed)."""
    for kind in kinds:
        path = pf.write(folder, kind)
        (folder / f"{path.stem}.json").write_text(json.dumps({
            "version": "5.4.1", "flags": {}, "imagePath": path.name, "imageData": None,
            "imageWidth": pf.WIDTH, "imageHeight": pf.HEIGHT,
            "shapes": [{"label": "box", "points": [list(pf.BOX[:2]), list(pf.BOX[2:])],
                        "shape_type": "rectangle", "group_id": None, "flags": {}}],
        }))
    return folder


def write_coco(folder, kinds):
    """COCO annotations (xywh, displayed pixels) of one file a kind in folder/images."""
    image_dir = folder / "images"
    image_dir.mkdir()
    x1, y1, x2, y2 = pf.BOX
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "box"}]}
    for i, kind in enumerate(kinds, start=1):
        path = pf.write(image_dir, kind)
        coco["images"].append({"id": i, "file_name": path.name, "width": pf.WIDTH, "height": pf.HEIGHT})
        coco["annotations"].append({"id": i, "image_id": i, "category_id": 1, "iscrowd": 0,
                                    "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)})
    (folder / "train.json").write_text(json.dumps(coco))
    return folder / "train.json", image_dir


@pytest.mark.parametrize("kind", sorted(pf.KINDS))
def test_header_and_pixels_show_the_rectangle_at_the_box(tmp_path, kind):
    path = pf.write(tmp_path, kind)
    assert image_size(path) == (pf.WIDTH, pf.HEIGHT)
    image = read_image(path)
    assert image.shape == (pf.HEIGHT, pf.WIDTH, 3) and image.dtype == np.uint8
    inside, outside = brightness(image, pf.BOX)
    assert inside > pf.BRIGHT - 10 and outside < pf.DARK + 10


# OpenCV 5.1 cannot read an orientation-8 TIFF ('original_ptr' assertion): that kind is
# checked against Pillow's exif_transpose in test_strips_match_pil_exif_transpose_for_every_orientation.
@pytest.mark.parametrize("kind", [kind for kind in pf.LOSSLESS if kind != "tiff_o8"])
def test_pixels_agree_with_opencv_imread(tmp_path, kind):
    path = pf.write(tmp_path, kind)
    theirs = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert theirs is not None, f"cv2.imread cannot read {path.name}"
    np.testing.assert_array_equal(read_image(path), theirs[..., ::-1])


@pytest.mark.parametrize("kind", sorted(pf.KINDS))
def test_strips_decode_as_the_whole_image(tmp_path, kind, monkeypatch):
    """Large images are converted and turned strip by strip: the same pixels."""
    path = pf.write(tmp_path, kind)
    whole = read_image(path)
    monkeypatch.setattr(images, "_STRIP_BYTES", pf.WIDTH * 4 * 5)  # 5-row strips, the last short
    np.testing.assert_array_equal(read_image(path), whole)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "P", "I;16"])
def test_strips_match_pil_exif_transpose_for_every_orientation(tmp_path, monkeypatch, orientation, mode):
    values = np.random.default_rng(orientation).integers(0, 256, (23, 31, 4), dtype=np.uint8)
    values[..., 3] = 255  # opaque, so PIL's RGB conversion is the reference
    image = Image.fromarray(values).convert(mode)
    path = tmp_path / "o.png"
    image.save(path, exif=pf.exif(orientation))
    expected = read_image(path)
    reference = ImageOps.exif_transpose(Image.open(path))
    assert expected.shape[:2] == (reference.height, reference.width)
    if mode in ("RGB", "RGBA"):
        np.testing.assert_array_equal(expected, np.asarray(reference.convert("RGB")))
    monkeypatch.setattr(images, "_STRIP_BYTES", 31 * 4 * 4)
    np.testing.assert_array_equal(read_image(path), expected)


def test_inspect_verify_passes_every_kind_through_the_cli(tmp_path):
    folder = write_labelme(tmp_path, sorted(pf.KINDS))
    result = CliRunner().invoke(main, ["data", "inspect", "--format", "labelme", "--annotations",
                                       str(folder), "--verify", "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert f"all {len(pf.KINDS)} images decode" in result.output


def test_inspect_verify_names_each_bad_file_in_one_line(tmp_path):
    folder = write_labelme(tmp_path, ROTATED_JPEGS)
    noise = np.random.default_rng(0).integers(0, 256, (pf.HEIGHT, pf.WIDTH), dtype=np.uint8)
    good = pf.write(folder, "jpeg_o6", picture=noise).read_bytes()
    (folder / "o6.jpeg").write_bytes(good[: len(good) * 3 // 4])  # truncated: header still readable
    Image.fromarray(np.zeros((pf.HEIGHT, pf.WIDTH), np.float32)).save(folder / "O8.JPG.tif")
    (folder / "O8.json").write_text((folder / "O8.json").read_text().replace('"O8.JPG"', '"O8.JPG.tif"'))
    result = CliRunner().invoke(main, ["data", "inspect", "--format", "labelme", "--annotations",
                                       str(folder), "--verify", "--workers", "1"])
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if "o6.jpeg" in line or "O8.JPG.tif" in line]
    assert len(lines) == 2, result.output
    assert "truncated" in lines[0] + lines[1] and "mode F" in lines[0] + lines[1]
    assert result.output.strip().splitlines()[-1].startswith("error: 2 of 3 images do not decode")


def test_verify_reports_a_header_that_disagrees_with_the_pixels(tmp_path, monkeypatch):
    """A decoded size other than the annotated one is reported (one line naming the file)."""
    from detect.data.verify import verify_images

    folder = write_labelme(tmp_path, ["jpeg_o6"])
    dataset = load_dataset("labelme", str(folder))
    monkeypatch.setattr(images, "_ORIENT", {})  # a decoder that ignores the tag
    checked, problems = verify_images(dataset, workers=1, progress=False)
    assert checked == 1 and len(problems) == 1
    assert "o6.jpeg: decodes to 48x72" in problems[0][1] and "annotations say 72x48" in problems[0][1]


def pipeline_boxes(dataset):
    """[(canvas image (H, W, 3), gt box (4,) xyxy canvas pixels)] from the eval pipeline at
    scale 2 (48 -> 96 rows)."""
    ds = make_dataset(dataset, batch_size=4, min_size=96, max_size=144, max_boxes=4, pad_value=0.0)
    out = []
    for batch in ds:
        for image, boxes, labels in zip(batch["images"].numpy(), batch["gt_boxes"].numpy(),
                                        batch["gt_labels"].numpy()):
            assert list(labels) == [1, -1, -1, -1]
            out.append((image, boxes[0]))
    return out


@pytest.mark.parametrize("fmt", ["labelme", "coco"])
def test_pipeline_boxes_lie_on_the_decoded_rectangle(tmp_path, fmt):
    kinds = sorted(pf.KINDS)
    if fmt == "labelme":
        dataset = load_dataset("labelme", str(write_labelme(tmp_path, kinds)))
    else:
        annotations, image_dir = write_coco(tmp_path, kinds)
        dataset = load_dataset("coco", str(annotations), images=str(image_dir))
    examples = pipeline_boxes(dataset)
    assert len(examples) == len(kinds)
    for image, box in examples:
        np.testing.assert_allclose(box, np.array(pf.BOX) * 2)
        inside, outside = brightness(image[:96, :144], box, margin=3)
        assert inside > pf.BRIGHT - 10 and outside < pf.DARK + 10


def test_a_version_1_header_cache_is_read_again(tmp_path):
    """Version-1 caches may hold a rotated TIFF's stored size; they are not trusted."""
    from detect.data.header_cache import HeaderCache

    folder = write_labelme(tmp_path, ["tiff_o8"])
    path = str(folder / "o8.tif")
    cache = HeaderCache(str(folder))
    stat = (folder / "o8.tif").stat()
    with open(cache.path, "w") as f:
        json.dump({"version": 1, "source": cache.source,
                   "images": {path: [stat.st_size, stat.st_mtime_ns, pf.HEIGHT, pf.WIDTH]}}, f)
    assert HeaderCache(str(folder)).image_size(path) == (pf.WIDTH, pf.HEIGHT)


def test_annotations_in_stored_orientation_get_one_line_naming_the_file(tmp_path):
    """A tool that ignored the tag wrote the stored size: one line says so."""
    folder = write_labelme(tmp_path, ["jpeg_o6"])
    (folder / "o6.json").write_text((folder / "o6.json").read_text()
                                     .replace('"imageWidth": 72, "imageHeight": 48', '"imageWidth": 48, "imageHeight": 72'))
    result = CliRunner().invoke(main, ["data", "inspect", "--format", "labelme", "--annotations", str(folder)])
    assert result.exit_code != 0 and "Traceback" not in result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: ") and "o6.jpeg" in line and "EXIF orientation" in line
