"""Input pipelines (tf.data and the PyDataset path, each test on both): static shapes, padding,
boxes that follow resize and flip, bad images."""

import json
import logging

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from detect.data.pipeline import SkippedImages, canvas_for, make_dataset, prepare_image
from detect.data.pydataset import make_batches
from detect.data.formats import load_dataset
from detect.data.records import Dataset, Record
from detect.errors import DetectError

MIN_SIZE, MAX_SIZE, MAX_BOXES = 64, 128, 4
# Landscape canvas: min 64 x max 128 (already multiples of 32); portrait: its transpose.
LANDSCAPE, PORTRAIT = (64, 128), (128, 64)

# Solid rectangles on black: (height, width, [(x1, y1, x2, y2, colour), ...]), boxes in
# continuous pixel coordinates (x1=4, x2=20 covers columns 4..19). Every rectangle sits
# off-centre, so a box that failed to follow the flip would land on black pixels.
RED, GREEN, BLUE, YELLOW = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)
IMAGES = {
    # 32 x 48: scale min(64/32 = 2, 128/48 = 2.67) = 2 -> 64 x 96.
    "a.png": (32, 48, [(4, 6, 20, 26, RED), (30, 2, 44, 12, GREEN)]),
    # 48 x 32: scale 2 -> 96 x 64.
    "b.png": (48, 32, [(2, 30, 14, 44, BLUE)]),
    # 40 x 40: scale 64/40 = 1.6 -> 64 x 64.
    "c.png": (40, 40, [(24, 4, 36, 20, YELLOW)]),
    # 32 x 80: scale min(64/32 = 2, 128/80 = 1.6) = 1.6 -> round(51.2) = 51 x 128.
    "d.png": (32, 80, [(6, 8, 30, 28, GREEN), (50, 4, 62, 16, RED)]),
}
CONTENT = {"a.png": (64, 96), "b.png": (96, 64), "c.png": (64, 64), "d.png": (51, 128)}


def draw(height, width, rects):
    image = np.zeros((height, width, 3), np.uint8)
    for x1, y1, x2, y2, colour in rects:
        image[y1:y2, x1:x2] = colour
    return image


def write_coco(root, images, crowd=None, negative=False):
    """PNG files (lossless, so colours stay exact) + a COCO json; returns the json path."""
    (root / "images").mkdir()
    entries, anns = [], []
    for image_id, (name, (h, w, rects)) in enumerate(images.items(), start=1):
        Image.fromarray(draw(h, w, rects)).save(root / "images" / name)
        entries.append({"id": image_id, "file_name": name, "width": w, "height": h})
        for x1, y1, x2, y2, colour in rects:
            label = [RED, GREEN, BLUE, YELLOW].index(colour) + 1
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": label,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": 0})
    if crowd is not None:
        # A crowd region over the whole of image `crowd`: an ignore region, never a target.
        h, w, _ = images[crowd]
        image_id = list(images).index(crowd) + 1
        anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": 1,
                     "bbox": [0, 0, w, h], "iscrowd": 1})
    if negative:
        Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(root / "images" / "empty.png")
        entries.append({"id": 99, "file_name": "empty.png", "width": 60, "height": 40})
    categories = [{"id": k, "name": n} for k, n in enumerate(["red", "green", "blue", "yellow"], start=1)]
    path = root / "train.json"
    path.write_text(json.dumps({"images": entries, "annotations": anns, "categories": categories}))
    return str(path)


@pytest.fixture(scope="module")
def shapes_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    path = write_coco(root, IMAGES, crowd="c.png", negative=True)
    return load_dataset("coco", path, str(root / "images"))


LOADERS = {"tf_data": make_dataset, "pydataset": make_batches}
LOADER = {"name": "tf_data"}


@pytest.fixture(autouse=True, params=sorted(LOADERS))
def loader(request):
    """Every test builds its pipelines with both loaders (splits.input_loader's choices)."""
    LOADER["name"] = request.param
    yield request.param
    LOADER["name"] = "tf_data"


def on_tf_data():
    return LOADER["name"] == "tf_data"


def spec(ds):
    """key -> (shape, NumPy dtype) every batch has (None where batches differ): tf.data's
    element_spec, or what one epoch of a PyDataset shows."""
    if on_tf_data():
        return {k: (tuple(s.shape.as_list()), s.dtype.as_numpy_dtype) for k, s in ds.element_spec.items()}
    out = {}
    for batch in batches(ds):
        for k, v in batch.items():
            shape = out.get(k, (v.shape, None))[0]
            out[k] = (tuple(a if a == b else None for a, b in zip(shape, v.shape)), v.dtype.type)
    return out


def batches(ds):
    return [{k: np.asarray(v) for k, v in batch.items()} for batch in ds]


def examples(ds):
    """Unbatched examples as dicts of NumPy arrays."""
    out = []
    for batch in batches(ds):
        for i in range(len(batch["image_id"])):
            out.append({k: v[i] for k, v in batch.items()})
    return out


def expected_boxes(name):
    """The record's boxes scaled to the resized content, (n, 4) xyxy."""
    h, w, rects = IMAGES[name]
    ch, cw = CONTENT[name]
    sx, sy = cw / w, ch / h
    return np.array([[x1 * sx, y1 * sy, x2 * sx, y2 * sy] for x1, y1, x2, y2, _ in rects], np.float32)


def make(dataset, **kwargs):
    args = dict(batch_size=2, min_size=MIN_SIZE, max_size=MAX_SIZE, max_boxes=MAX_BOXES)
    return LOADERS[LOADER["name"]](dataset, **{**args, **kwargs})


def test_canvas_for():
    # max_size 1000 rounds up to 32 * 32 = 1024; an explicit canvas wins.
    assert canvas_for(1000) == (1024, 1024)
    assert canvas_for(128) == (128, 128)
    assert canvas_for(1000, [600, 800]) == (600, 800)


def test_element_spec_is_static_on_a_square_canvas(shapes_dataset):
    # min_size = max_size: landscape and portrait canvases are both 128 x 128.
    ds = make(shapes_dataset, training=True, flip=True, min_size=128)
    # Training drops the remainder, so even the batch dimension is static.
    assert spec(ds) == {"images": ((2, 128, 128, 3), np.float32), "image_shape": ((2, 2), np.int32),
                        "scale": ((2, 2), np.float32), "image_id": ((2,), np.int64),
                        "gt_boxes": ((2, MAX_BOXES, 4), np.float32), "gt_labels": ((2, MAX_BOXES), np.int32)}
    # 5 images, batch 2, remainder dropped: 2 batches.
    assert len(batches(ds)) == 2


def test_batches_are_grouped_by_orientation(shapes_dataset):
    # Landscape (w >= h): a 64x96, c 64x64, d 51x128, empty 64x96 -> canvas 64 x 128.
    # Portrait: b 96x64 -> canvas 128 x 64. Batch 2 with the remainder dropped: the 4
    # landscape images make 2 batches, the single portrait image none.
    ds = make(shapes_dataset, training=True, flip=True)
    assert spec(ds)["images"][0] == (2, None if on_tf_data() else 64, None if on_tf_data() else 128, 3)
    out = batches(ds)
    assert [b["images"].shape for b in out] == [(2, 64, 128, 3)] * 2
    for batch in out:
        assert (batch["image_shape"][:, 0] <= batch["image_shape"][:, 1]).all()
    # Evaluation keeps every image: the portrait one comes in its own (128 x 64) batch.
    shapes = {int(i): b["images"].shape[1:3] for b in batches(make(shapes_dataset, batch_size=4)) for i in b["image_id"]}
    names = {r.image_id: r.file_name for r in shapes_dataset.records}
    assert {names[i]: s for i, s in shapes.items()} == {
        "a.png": LANDSCAPE, "b.png": PORTRAIT, "c.png": LANDSCAPE, "d.png": LANDSCAPE, "empty.png": LANDSCAPE}


def test_padding_takes_the_pad_value(shapes_dataset):
    mean = np.array([123.68, 116.779, 103.939], np.float32)  # caffe mean, RGB order
    for e in examples(make(shapes_dataset, batch_size=5, pad_value=mean)):
        ch, cw = e["image_shape"]
        np.testing.assert_allclose(e["images"][ch:].reshape(-1, 3), np.broadcast_to(mean, (e["images"][ch:].size // 3, 3)), atol=1e-4)
        np.testing.assert_allclose(e["images"][:ch, cw:].reshape(-1, 3) - mean, 0, atol=1e-4)
        if int(e["image_id"]) != 99:  # content pixels are untouched: black, or a colour
            assert e["images"][:ch, :cw].min() == 0


def test_evaluation_pipeline_content_scale_and_padding(shapes_dataset):
    out = {int(e["image_id"]): e for e in examples(make(shapes_dataset, batch_size=3))}
    assert sorted(out) == [1, 2, 3, 4, 99]  # no image dropped when not training
    names = {r.image_id: r.file_name for r in shapes_dataset.records}
    for image_id, name in names.items():
        e = out[image_id]
        if name == "empty.png":
            # 40 x 60: scale min(64/40 = 1.6, 128/60) = 1.6 -> 64 x 96; every row padding.
            np.testing.assert_array_equal(e["image_shape"], [64, 96])
            np.testing.assert_array_equal(e["gt_labels"], [-1] * MAX_BOXES)
            np.testing.assert_array_equal(e["gt_boxes"], np.zeros((MAX_BOXES, 4)))
            continue
        ch, cw = CONTENT[name]
        h, w, rects = IMAGES[name]
        np.testing.assert_array_equal(e["image_shape"], [ch, cw])
        np.testing.assert_allclose(e["scale"], [ch / h, cw / w], rtol=1e-6)
        n = len(rects)
        np.testing.assert_allclose(e["gt_boxes"][:n], expected_boxes(name), rtol=1e-5)
        labels = [[RED, GREEN, BLUE, YELLOW].index(r[4]) + 1 for r in rects]
        np.testing.assert_array_equal(e["gt_labels"][:n], labels)
        # Padding rows: label -1, box 0 (c.png's crowd region is not among the targets).
        np.testing.assert_array_equal(e["gt_labels"][n:], -1)
        np.testing.assert_array_equal(e["gt_boxes"][n:], 0)
        # The canvas outside the content is zero.
        assert e["images"][ch:].max(initial=0) == 0 and e["images"][:, cw:].max(initial=0) == 0


def assert_boxes_cover_their_rectangles(e, name):
    """Every gt box of the output image encloses pixels of its rectangle's colour only."""
    _, _, rects = IMAGES[name]
    image = e["images"]
    for box, (_, _, _, _, colour) in zip(e["gt_boxes"], rects):
        x1, y1, x2, y2 = box
        # Bilinear upsampling by <= 2 blends at most one output pixel at each edge.
        inner = image[int(np.ceil(y1)) + 1 : int(np.floor(y2)) - 1, int(np.ceil(x1)) + 1 : int(np.floor(x2)) - 1]
        assert inner.size > 0
        np.testing.assert_allclose(inner.reshape(-1, 3).mean(0), colour, atol=0.5)
        np.testing.assert_allclose(inner, np.broadcast_to(colour, inner.shape), atol=1.0)
        # The whole box is mostly the colour too (only its one-pixel rim is blended).
        whole = image[int(y1) : int(np.ceil(y2)), int(x1) : int(np.ceil(x2))].reshape(-1, 3).mean(0)
        np.testing.assert_allclose(whole, colour, atol=60)


@pytest.mark.parametrize("cache", [False, True])
def test_boxes_follow_flip_and_resize(shapes_dataset, cache):
    ds = make(shapes_dataset, training=True, flip=True, cache=cache, seed=3)
    names = {r.image_id: r.file_name for r in shapes_dataset.records}
    seen = {"flipped": 0, "kept": 0}
    for _ in range(4):  # 4 epochs x 4 images (one per epoch is the dropped remainder)
        for e in examples(ds):
            name = names[int(e["image_id"])]
            if name == "empty.png":
                continue
            expected = expected_boxes(name)
            cw = CONTENT[name][1]
            mirrored = np.stack([cw - expected[:, 2], expected[:, 1], cw - expected[:, 0], expected[:, 3]], 1)
            got = e["gt_boxes"][: len(expected)]
            if np.allclose(got, expected, atol=1e-4):
                seen["kept"] += 1
            else:
                np.testing.assert_allclose(got, mirrored, atol=1e-4)
                seen["flipped"] += 1
            assert_boxes_cover_their_rectangles(e, name)
    assert seen["flipped"] > 0 and seen["kept"] > 0, seen


def flip_pattern(ds, epochs):
    """(image_id, x1 of the first box) per example over several epochs."""
    return [(int(e["image_id"]), float(e["gt_boxes"][0, 0])) for _ in range(epochs) for e in examples(ds)]


def test_flips_are_reproducible_and_change_between_epochs(shapes_dataset):
    first = flip_pattern(make(shapes_dataset, training=True, flip=True, seed=3), 3)
    second = flip_pattern(make(shapes_dataset, training=True, flip=True, seed=3), 3)
    assert first == second
    # Each image meets a fresh coin each epoch: some image shows both orientations.
    by_image = {}
    for image_id, x1 in first:
        by_image.setdefault(image_id, set()).add(x1)
    assert any(len(xs) == 2 for image_id, xs in by_image.items() if image_id != 99)


def test_proposals_are_resized_and_flipped_with_their_image(shapes_dataset):
    # Proposals equal to the gt boxes (original pixels) must stay equal to the output gt
    # boxes through resize and flip; zero padding rows stay zero.
    proposals = np.zeros((len(shapes_dataset.records), 3, 4), np.float32)
    for i, record in enumerate(shapes_dataset.records):
        proposals[i, : len(record.boxes)] = record.boxes
    ds = make(shapes_dataset, training=True, flip=True, seed=3, proposals=proposals)
    assert spec(ds)["proposals"] == ((2, 3, 4), np.float32)
    # c.png's crowd box comes last: a proposal, but no gt box.
    orientations = set()
    names = {r.image_id: r.file_name for r in shapes_dataset.records}
    count = {r.image_id: (int((~r.iscrowd).sum()), len(r.boxes)) for r in shapes_dataset.records}
    for _ in range(3):
        for e in examples(ds):
            targets, rows = count[int(e["image_id"])]
            np.testing.assert_allclose(e["proposals"][:targets], e["gt_boxes"][:targets], atol=1e-4)
            np.testing.assert_array_equal(e["proposals"][rows:], 0)
            name = names[int(e["image_id"])]
            if name != "empty.png":
                unflipped = expected_boxes(name)
                orientations.add(bool(np.allclose(e["proposals"][: len(unflipped)], unflipped, atol=1e-4)))
    assert orientations == {True, False}  # both flipped and unflipped images were seen


def test_no_flip_without_training(shapes_dataset):
    for e in examples(make(shapes_dataset, training=False, flip=True)):
        name = {r.image_id: r.file_name for r in shapes_dataset.records}[int(e["image_id"])]
        if name != "empty.png":
            np.testing.assert_allclose(e["gt_boxes"][: len(IMAGES[name][2])], expected_boxes(name), rtol=1e-5)


def test_training_shuffles_every_image_into_an_epoch(shapes_dataset):
    ds = make(shapes_dataset, batch_size=1, training=True)
    first, second = ([int(e["image_id"]) for e in examples(ds)] for _ in range(2))
    assert sorted(first) == sorted(second) == [1, 2, 3, 4, 99]


def test_crowd_and_difficult_boxes_are_not_targets(tmp_path):
    Image.fromarray(draw(32, 32, [])).save(tmp_path / "x.png")
    record = Record(
        image_id=5, file_name="x.png", path=str(tmp_path / "x.png"), width=32, height=32,
        boxes=[[0, 0, 8, 8], [8, 8, 16, 16], [16, 16, 24, 24]], labels=[1, 2, 1],
        iscrowd=[False, True, False], difficult=[False, False, True],
    )
    dataset = Dataset(classes=["a", "b"], records=[record])
    (e,) = examples(make(dataset, batch_size=1, min_size=32, max_size=32))
    # Only the first box remains; 32 -> 32 means scale 1.
    np.testing.assert_array_equal(e["gt_labels"], [1, -1, -1, -1])
    np.testing.assert_array_equal(e["gt_boxes"][0], [0, 0, 8, 8])


def test_more_boxes_than_max_boxes_are_truncated_with_a_warning(tmp_path, caplog):
    Image.fromarray(draw(32, 32, [])).save(tmp_path / "x.png")
    boxes = [[i, i, i + 4, i + 4] for i in range(6)]
    record = Record(image_id=1, file_name="x.png", path=str(tmp_path / "x.png"), width=32, height=32,
                    boxes=boxes, labels=[1] * 6)
    with caplog.at_level(logging.WARNING):
        ds = make(Dataset(classes=["a"], records=[record]), batch_size=1, min_size=32, max_size=32)
    (e,) = examples(ds)
    np.testing.assert_array_equal(e["gt_boxes"], boxes[:MAX_BOXES])
    assert "more than input.max_boxes=4" in caplog.text


def truncated_jpeg(path, size=(40, 30)):
    """A JPEG whose header (and so its size) is intact but whose pixel data is cut off."""
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=95)
    data = path.read_bytes()
    start = data.index(b"\xff\xda")  # start-of-scan marker: the entropy-coded pixels follow
    path.write_bytes(data[: start + (len(data) - start) // 2])


@pytest.mark.parametrize("cache", [False, True])
def test_unreadable_image_is_skipped_and_counted(tmp_path, cache):
    images = {"a.png": IMAGES["a.png"], "b.png": IMAGES["b.png"], "c.png": IMAGES["c.png"]}
    json_path = write_coco(tmp_path, images)
    data = json.loads(open(json_path).read())
    data["images"].append({"id": 50, "file_name": "bad.jpg", "width": 40, "height": 30})
    open(json_path, "w").write(json.dumps(data))
    truncated_jpeg(tmp_path / "images" / "bad.jpg")
    # The header check of load_dataset passes: the size is still readable.
    dataset = load_dataset("coco", json_path, str(tmp_path / "images"))
    assert len(dataset) == 4

    skipped = SkippedImages(len(dataset))
    # min = max = 128: one square canvas, so one batch holds all readable images.
    ds = make(dataset, batch_size=4, min_size=128, training=False, cache=cache, skipped=skipped)
    for _ in range(2):  # a second epoch must not count the same file again
        (batch,) = batches(ds)
        assert sorted(batch["image_id"].tolist()) == [1, 2, 3]
        assert batch["images"].shape == (3, 128, 128, 3)
    assert skipped.count == 1
    assert skipped.files == [str(tmp_path / "images" / "bad.jpg")]
    assert skipped.fraction == pytest.approx(1 / 4)


def test_image_replaced_after_loading_is_skipped(tmp_path):
    json_path = write_coco(tmp_path, {"a.png": IMAGES["a.png"], "b.png": IMAGES["b.png"]})
    dataset = load_dataset("coco", json_path, str(tmp_path / "images"))
    (tmp_path / "images" / "a.png").write_bytes(b"not an image any more")
    skipped = SkippedImages(len(dataset))
    (e,) = examples(make(dataset, batch_size=2, skipped=skipped))
    assert int(e["image_id"]) == 2 and skipped.count == 1


def test_empty_dataset_is_an_error():
    with pytest.raises(DetectError, match="has no images"):
        make(Dataset(classes=["a"], records=[], source="empty.json"))


def test_prepare_image_pads_to_the_canvas_of_its_orientation():
    # Portrait 500 x 375 (h x w) at min 600 / max 1000: scale min(600/375 = 1.6,
    # 1000/500 = 2) = 1.6 -> 800 x 600, on the portrait canvas 1024 x 608.
    image = np.full((500, 375, 3), 9, np.uint8)
    out = prepare_image(image, min_size=600, max_size=1000, pad_value=5.0)
    assert out["images"].shape == (1, 1024, 608, 3)
    np.testing.assert_array_equal(out["image_shape"], [[800, 600]])
    np.testing.assert_allclose(out["scale"], [[1.6, 1.6]])
    assert out["images"][0, 800:].min() == out["images"][0, 800:].max() == 5.0
    # Landscape 375 x 500 -> 600 x 800 on 608 x 1024.
    out = prepare_image(image.transpose(1, 0, 2), min_size=600, max_size=1000)
    assert out["images"].shape == (1, 608, 1024, 3)
    np.testing.assert_array_equal(out["image_shape"], [[600, 800]])
    # The config's canvas [608, 1008] (input.canvas) and its transpose, as make_dataset pads.
    out = prepare_image(image, min_size=600, max_size=1000, canvas=[608, 1008])
    assert out["images"].shape == (1, 1008, 608, 3)
    np.testing.assert_array_equal(out["image_shape"], [[800, 600]])


def test_prepare_image_shapes_and_scale():
    # 300 x 800 with min 600, max 1000 on a 1024 canvas: scale 1.25 -> 375 x 1000.
    image = np.full((300, 800, 3), 7, np.uint8)
    out = prepare_image(image, min_size=600, max_size=1000, canvas_size=(1024, 1024))
    assert out["images"].shape == (1, 1024, 1024, 3) and out["images"].dtype == np.float32
    np.testing.assert_array_equal(out["image_shape"], [[375, 1000]])
    assert out["image_shape"].dtype == np.int32
    np.testing.assert_allclose(out["scale"], [[1.25, 1.25]])
    np.testing.assert_allclose(out["images"][0, :375, :1000], 7, atol=1e-3)
    assert out["images"][0, 375:].max() == 0 and out["images"][0, :, 1000:].max() == 0


def test_prepare_image_matches_the_evaluation_pipeline(shapes_dataset):
    record = shapes_dataset.records[3]  # d.png, 32 x 80
    e = next(e for e in examples(make(shapes_dataset, batch_size=5)) if e["image_id"] == record.image_id)
    out = prepare_image(draw(*IMAGES["d.png"]), min_size=MIN_SIZE, max_size=MAX_SIZE)
    np.testing.assert_array_equal(out["image_shape"][0], e["image_shape"])
    np.testing.assert_allclose(out["scale"][0], e["scale"])
    np.testing.assert_allclose(out["images"][0], e["images"], atol=1e-3)
