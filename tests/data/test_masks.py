"""Instance masks in the data: pycocotools' conventions, the readers, the writers, shapes --masks."""

import json
import os

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from detect.data import masks
from detect.data.coco import load_coco
from detect.data.convert import convert
from detect.data.cvat import load_cvat
from detect.data.formats import load_dataset
from detect.data.labelme import load_labelme
from detect.data.records import write_coco
from detect.data.shapes import generate_shapes, render_image
from detect.data.yolo import load_yolo
from detect.errors import DetectError


# ------------------------------------------------------------------ pycocotools' conventions
def test_polygon_corners_are_continuous_pixel_edges():
    # The square with corners (0, 0) and (4, 4) covers pixels 0..3 in both axes: area
    # 4 * 4 = 16, tight box xyxy (0, 0, 4, 4): the same edges as the box convention.
    square = [[0, 0, 4, 0, 4, 4, 0, 4]]
    binary = masks.decode(square, 6, 6)
    assert binary.dtype == np.uint8 and binary.shape == (6, 6)
    np.testing.assert_array_equal(np.flatnonzero(binary.any(axis=0)), [0, 1, 2, 3])
    assert masks.area(square, 6, 6) == 16
    np.testing.assert_array_equal(masks.bbox(square, 6, 6), [0, 0, 4, 4])


def test_uncompressed_rle_is_column_major_and_compressed_on_reading():
    # 4x5 (HxW) mask, rows 1-2 and columns 2-4 set. Column-major runs: columns 0 and 1 are
    # 8 zeros, plus row 0 of column 2 -> 9 zeros; then rows 1-2 (2 ones), rows 3 and 0 of
    # the next column (2 zeros), ... -> [9, 2, 2, 2, 2, 2, 1] (sum 20 = 4 * 5).
    binary = np.zeros((4, 5), np.uint8)
    binary[1:3, 2:5] = 1
    rle = masks.check_segmentation({"size": [4, 5], "counts": [9, 2, 2, 2, 2, 2, 1]}, 4, 5, "x")
    assert isinstance(rle["counts"], str)
    np.testing.assert_array_equal(masks.decode(rle, 4, 5), binary)
    assert rle == masks.encode(binary)
    # toBbox is xywh (2, 1, 3, 2) -> xyxy (2, 1, 5, 3); area 2 * 3 = 6.
    np.testing.assert_array_equal(masks.bbox(rle, 4, 5), [2, 1, 5, 3])
    assert masks.area(rle, 4, 5) == 6


def test_rle_polygon_round_trip_with_pycocotools():
    binary = np.zeros((20, 30), np.uint8)
    binary[3:12, 5:25] = 1  # a 9 x 20 rectangle
    rle = masks.encode(binary)
    assert mask_utils.area({**rle, "counts": rle["counts"].encode()}) == 9 * 20
    polygons = masks.polygons_of(rle, 20, 30)
    # The traced outline follows the pixel corners: decoding it gives the same pixels.
    np.testing.assert_array_equal(masks.decode(polygons, 20, 30), binary)
    assert masks.encode(masks.decode(polygons, 20, 30)) == rle
    assert masks.polygons_of(masks.encode(np.zeros((4, 4), np.uint8)), 4, 4) == []


@pytest.mark.parametrize("segmentation, message", [
    ([[1, 1, 5, 1]], "polygon 0 needs at least 3 points"),
    ([[1, 1, 5, 1, 5]], "polygon 0 needs at least 3 points"),
    ([[1, 1, "a", 1, 5, 5]], "polygon 0 must be a flat list of numbers"),
    ({"size": [10, 20], "counts": "abc"}, r"RLE size \[10, 20\] .* disagrees with the 30x10"),
    ({"size": [10, 30], "counts": [5, 5]}, "sum to 10 \\* 30 = 300"),
    ({"counts": [5, 5]}, "RLE needs 'size'"),
    ("polygon", "segmentation must be a list of polygons or an RLE dict"),
])
def test_bad_segmentations_are_one_line_errors(segmentation, message):
    with pytest.raises(DetectError, match=message) as error:
        masks.check_segmentation(segmentation, 10, 30, "a.json: annotation id 7 (entry 6)")
    assert str(error.value).startswith("a.json: annotation id 7") and "\n" not in str(error.value)


# ------------------------------------------------------------------ readers
def _coco_file(tmp_path, annotations, width=30, height=10):
    Image.new("RGB", (width, height)).save(tmp_path / "a.png")
    Image.new("RGB", (width, height)).save(tmp_path / "b.png")
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": width, "height": height},
                   {"id": 2, "file_name": "b.png", "width": width, "height": height}],
        "annotations": annotations,
        "categories": [{"id": 4, "name": "thing"}],
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    return str(path)


def _ann(ann_id, segmentation=None, bbox=(1, 1, 4, 4), iscrowd=0, image_id=1):
    ann = {"id": ann_id, "image_id": image_id, "category_id": 4, "bbox": list(bbox), "iscrowd": iscrowd}
    if segmentation is not None:
        ann["segmentation"] = segmentation
    return ann


def test_coco_reads_polygons_rle_crowd_and_boxes_only(tmp_path):
    crowd = np.zeros((10, 30), np.uint8)
    crowd[5:9, 20:28] = 1
    crowd_rle = mask_utils.encode(np.asfortranarray(crowd))
    uncompressed = {"size": [10, 30], "counts": [int(v) for v in
                                                   _uncompressed_counts(crowd)]}
    path = _coco_file(tmp_path, [
        _ann(1, [[1, 1, 5, 1, 5, 5, 1, 5]]),
        _ann(2, {"size": [10, 30], "counts": crowd_rle["counts"].decode()}, bbox=(20, 5, 8, 4)),
        _ann(3, uncompressed, bbox=(20, 5, 8, 4), iscrowd=1),
        _ann(4, [], bbox=(10, 2, 3, 3)),  # boxes-only files write an empty list: no mask
    ])
    dataset = load_coco(path)
    first, second = dataset.records
    assert dataset.has_masks and second.masks is None
    polygon, compressed, crowd_mask, none = first.masks
    assert polygon == [[1.0, 1.0, 5.0, 1.0, 5.0, 5.0, 1.0, 5.0]] and none is None
    assert compressed == crowd_mask  # the uncompressed crowd RLE reads as the same compressed one
    np.testing.assert_array_equal(masks.decode(crowd_mask, 10, 30), crowd)
    assert list(first.iscrowd) == [False, False, True, False]
    # Written back: the segmentation travels with its box; no mask, no key.
    out = tmp_path / "out.json"
    write_coco(dataset, out)
    written = json.loads(out.read_text())["annotations"]
    assert [a.get("segmentation") for a in written] == [polygon, compressed, crowd_mask, None]


def _uncompressed_counts(binary):
    flat = binary.reshape(-1, order="F")
    counts, current, run = [], 0, 0
    for value in flat:
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = value, 1
    counts.append(run)
    return counts


def test_validation_keeps_masks_with_their_boxes(tmp_path):
    # Box 1 has zero width and is dropped: its mask goes with it, box 2's stays.
    path = _coco_file(tmp_path, [_ann(1, [[1, 1, 5, 1, 5, 5]]), _ann(2, [[0, 0, 2, 0, 2, 2]], bbox=(3, 3, 0, 2)),
                                 _ann(3, [[8, 1, 12, 1, 12, 6]], bbox=(8, 1, 4, 5))])
    record = load_dataset("coco", path).records[0]
    assert len(record.boxes) == 2 and record.masks == [[[1, 1, 5, 1, 5, 5]], [[8, 1, 12, 1, 12, 6]]]


def test_coco_bad_segmentation_names_file_and_annotation(tmp_path):
    path = _coco_file(tmp_path, [_ann(7, [[1, 1, 5, 1]])])
    with pytest.raises(DetectError, match=r"gt.json: annotation id 7 \(entry 0\): polygon 0 needs at least 3"):
        load_coco(path)
    path = _coco_file(tmp_path, [_ann(8, {"size": [20, 30], "counts": "abc"})])
    with pytest.raises(DetectError, match=r"annotation id 8 .*RLE size \[20, 30\] .*disagrees with the 30x10"):
        load_coco(path)


def test_labelme_cvat_yolo_polygons_become_masks(tmp_path):
    Image.new("RGB", (20, 10)).save(tmp_path / "x.png")
    labelme = {"imagePath": "x.png", "imageWidth": 20, "imageHeight": 10, "shapes": [
        {"label": "a", "points": [[1, 1], [9, 1], [9, 8]], "shape_type": "polygon"},
        {"label": "a", "points": [[10, 2], [15, 6]], "shape_type": "rectangle"},
    ]}
    (tmp_path / "x.json").write_text(json.dumps(labelme))
    record = load_labelme(str(tmp_path / "x.json")).records[0]
    assert record.masks == [[[1.0, 1.0, 9.0, 1.0, 9.0, 8.0]], None]

    xml = ('<annotations><version>1.1</version><image id="0" name="x.png" width="20" height="10">'
           '<box label="a" xtl="1" ytl="1" xbr="5" ybr="5"/><polygon label="a" points="1,2;10,2;10,9"/>'
           '</image></annotations>')
    (tmp_path / "a.xml").write_text(xml)
    record = load_cvat(str(tmp_path / "a.xml"), str(tmp_path)).records[0]
    assert record.masks == [None, [[1.0, 2.0, 10.0, 2.0, 10.0, 9.0]]]

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.new("RGB", (20, 10)).save(tmp_path / "images" / "y.png")
    # Normalized polygon (0.1, 0.2), (0.5, 0.2), (0.5, 0.8) in a 20x10 image -> pixels
    # (2, 2), (10, 2), (10, 8); the box line has no mask.
    (tmp_path / "labels" / "y.txt").write_text("0 0.1 0.2 0.5 0.2 0.5 0.8\n0 0.75 0.5 0.2 0.4\n")
    (tmp_path / "data.yaml").write_text("names: [a]\ntrain: images\n")
    record = load_yolo(str(tmp_path / "data.yaml")).records[0]
    np.testing.assert_allclose(record.masks[0][0], [2, 2, 10, 2, 10, 8])
    assert record.masks[1] is None


def test_convert_writes_masks_back(tmp_path):
    out = generate_shapes(tmp_path / "shapes", num_images=6, image_size=64, seed=3, progress=False, masks=True)
    source = load_dataset("coco", out["annotations"]["train"])
    coco_out = tmp_path / "converted.json"
    convert("coco", out["annotations"]["train"], str(coco_out), to="coco")
    again = load_dataset("coco", str(coco_out), images=os.path.join(out["images_dir"], "train"))
    assert [r.masks for r in again.records] == [r.masks for r in source.records]
    # YOLO: each RLE is written as its outline polygon; read back, the pixels agree
    # (a polygon through the pixel corners of the outer contour: IoU 1 for these convex shapes
    # up to the staircase of the outline).
    convert("coco", out["annotations"]["train"], str(tmp_path / "yolo"), to="yolo")
    yolo = load_dataset("yolo", str(tmp_path / "yolo" / "data.yaml"))
    for a, b in zip(source.records, yolo.records):
        assert len(a.boxes) == len(b.boxes)
        for rle, polygon in zip(a.masks, b.masks):
            x, y = masks.decode(rle, 64, 64).astype(bool), masks.decode(polygon, 64, 64).astype(bool)
            assert (x & y).sum() / (x | y).sum() > 0.85


# ------------------------------------------------------------------ shapes --masks
def test_shapes_masks_are_exact_and_change_nothing_else(tmp_path):
    with_masks = generate_shapes(tmp_path / "m", num_images=8, image_size=64, seed=1, progress=False, masks=True)
    without = generate_shapes(tmp_path / "b", num_images=8, image_size=64, seed=1, progress=False)
    for split in ("train", "val"):
        a = json.loads(open(with_masks["annotations"][split]).read())
        b = json.loads(open(without["annotations"][split]).read())
        assert [{k: v for k, v in ann.items() if k != "segmentation"} for ann in a["annotations"]] == b["annotations"]
        for image in a["images"]:
            assert open(os.path.join(with_masks["images_dir"], image["file_name"]), "rb").read() == \
                open(os.path.join(without["images_dir"], image["file_name"]), "rb").read()
    # The RLE is the drawn mask itself: its tight box is the annotated box.
    rng = np.random.default_rng(5)
    image, boxes, labels, drawn = render_image(rng, 64, 4, plain=True, return_masks=True)
    for box, mask in zip(boxes, drawn):
        rle = masks.encode(mask)
        np.testing.assert_array_equal(masks.bbox(rle, 64, 64), box)
        assert masks.area(rle, 64, 64) == mask.sum()
        # plain images: the shape's pixels are exactly the non-white ones inside its box.
        x1, y1, x2, y2 = box.astype(int)
        np.testing.assert_array_equal((image[y1:y2, x1:x2] != 255).any(-1), mask[y1:y2, x1:x2])


def test_multiscale_masks_are_the_visible_pixels(tmp_path):
    from detect.data.shapes_multiscale import render_multiscale

    image, boxes, labels, visible = render_multiscale(np.random.default_rng(2), 160, return_masks=True)
    assert len(visible) == len(boxes) > 1
    union = np.zeros((160, 160), int)
    for mask, box in zip(visible, boxes):
        union += mask
        x1, y1, x2, y2 = box.astype(int)
        assert not mask[:y1].any() and not mask[y2:].any() and not mask[:, :x1].any() and not mask[:, x2:].any()
    assert union.max() == 1  # visible parts never overlap


def test_cli_names_the_file_and_annotation_in_one_line(tmp_path):
    from click.testing import CliRunner

    from detect.cli import main

    path = _coco_file(tmp_path, [_ann(5, {"size": [20, 30], "counts": "abc"})])
    result = CliRunner().invoke(main, ["data", "inspect", "--format", "coco", "--annotations", path])
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "gt.json: annotation id 5 (entry 0): RLE size [20, 30]" in lines[0]
