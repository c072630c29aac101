"""The PyDataset input path: the same batches as tf.data, its epochs, stand-ins, Keras' adapter."""

import json

import numpy as np
import pytest
from PIL import Image

from detect.data.formats import load_dataset
from detect.data.numpy_transforms import resize as np_resize
from detect.data.pipeline import SkippedImages, make_dataset
from detect.data.pydataset import DetectionBatches, make_batches
from detect.errors import DetectError


def write_photos(root, sizes, seed=0):
    """Noise JPEGs of the given (height, width) sizes with two boxes each; the json path."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir()
    entries, anns = [], []
    for image_id, (h, w) in enumerate(sizes, start=1):
        name = f"{image_id}.jpg"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "images" / name)
        entries.append({"id": image_id, "file_name": name, "width": w, "height": h})
        for k in range(2):
            x, y = float(rng.uniform(0, w / 2)), float(rng.uniform(0, h / 2))
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": k + 1,
                         "bbox": [x, y, w / 3, h / 3], "iscrowd": 0})
    path = root / "train.json"
    categories = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    path.write_text(json.dumps({"images": entries, "annotations": anns, "categories": categories}))
    return load_dataset("coco", str(path), str(root / "images"))


# Shrunk (antialiased), enlarged, portrait, landscape and square images.
SIZES = [(300, 451), (451, 300), (90, 120), (200, 200), (123, 457), (640, 480), (64, 80)]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_photos(tmp_path_factory.mktemp("photos"), SIZES)


def by_image(ds):
    """image_id -> the example (dict of NumPy arrays) and the canvas it came on."""
    out = {}
    for batch in ds:
        batch = {k: np.asarray(v) for k, v in batch.items()}
        for i, image_id in enumerate(batch["image_id"]):
            out[int(image_id)] = {k: v[i] for k, v in batch.items()}
    return out


@pytest.mark.parametrize("settings", [
    dict(min_size=128, max_size=200),
    dict(min_size=128, max_size=200, resize_rule="torchvision"),
    dict(min_size=128, max_size=200, canvas_size="per_image"),
    dict(min_size=96, max_size=96, pad_value=(123.68, 116.779, 103.939)),
])
def test_the_same_examples_as_tf_data(photos, settings):
    args = dict(batch_size=3, max_boxes=4, **settings)
    expected, got = by_image(make_dataset(photos, **args)), by_image(make_batches(photos, **args))
    assert sorted(got) == sorted(expected) == list(range(1, len(SIZES) + 1))
    for image_id, e in expected.items():
        g = got[image_id]
        assert g["images"].shape == e["images"].shape, image_id
        for key in ("image_shape", "gt_labels"):
            np.testing.assert_array_equal(g[key], e[key])
        np.testing.assert_allclose(g["scale"], e["scale"], rtol=1e-6)
        np.testing.assert_allclose(g["gt_boxes"], e["gt_boxes"], rtol=1e-5, atol=1e-4)
        if settings.get("canvas_size") == "per_image":
            continue  # the batch canvas depends on which images share the batch
        # Bilinear (antialiased when shrinking) by PIL / OpenCV vs tf.image.resize: within a
        # hundredth of a grey level of 255.
        np.testing.assert_allclose(g["images"], e["images"], atol=0.05)


def test_numpy_resize_matches_tf_image_resize():
    import tensorflow as tf

    from detect.data.transforms import resize as tf_resize

    image = np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    boxes = np.array([[10, 20, 300, 400]], np.float32)
    for min_size, max_size, rule in [(600, 1000, "detect"), (200, 333, "detect"), (800, 1333, "torchvision")]:
        a, a_boxes, a_scale = tf_resize(tf.constant(image), tf.constant(boxes), min_size, max_size, rule=rule)
        b, b_boxes, b_scale = np_resize(image, boxes, min_size, max_size, rule=rule)
        assert b.shape == tuple(a.shape) and b.dtype == np.float32
        np.testing.assert_allclose(b, a.numpy(), atol=0.05)
        np.testing.assert_array_equal(b_scale, a_scale.numpy())
        np.testing.assert_array_equal(b_boxes, a_boxes.numpy())
    # 480 x 640 at 600 / 1000: scale min(600 / 480, 1000 / 640) = 1.25 -> 600 x 800.
    assert np_resize(image, boxes, 600, 1000)[0].shape == (600, 800, 3)


def test_training_dataset_is_infinite_and_reshuffles_each_epoch(photos):
    ds = make_batches(photos, batch_size=2, min_size=64, max_size=64, max_boxes=4, training=True, flip=True,
                      seed=5, repeat=True)
    assert ds.num_batches is None
    # min = max = 64: one square canvas, 7 images in batches of 2 -> 3 a epoch (remainder dropped).
    per_epoch = 3
    epochs = [[int(i) for j in range(k * per_epoch, (k + 1) * per_epoch) for i in ds[j]["image_id"]]
              for k in range(4)]
    assert all(len(set(e)) == 6 for e in epochs)
    assert len({tuple(e) for e in epochs}) > 1  # a fresh order each epoch
    # Indexed access is reproducible (any worker thread may build any batch).
    again = make_batches(photos, batch_size=2, min_size=64, max_size=64, max_boxes=4, training=True, flip=True,
                         seed=5, repeat=True)
    for j in (0, 7, 11):
        np.testing.assert_array_equal(again[j]["images"], ds[j]["images"])
    with pytest.raises(TypeError):
        len(ds)


def test_unreadable_training_image_gets_a_stand_in(tmp_path):
    dataset = write_photos(tmp_path, [(40, 60)] * 4)
    (tmp_path / "images" / "2.jpg").write_bytes(b"not a jpeg")
    skipped = SkippedImages(len(dataset))
    ds = make_batches(dataset, batch_size=2, min_size=32, max_size=64, max_boxes=4, training=True,
                      skipped=skipped, repeat=True)
    ids = [int(i) for j in range(6) for i in ds[j]["image_id"]]
    assert len(ids) == 12 and 2 not in ids  # every batch full, never the broken image
    assert skipped.count == 1 and skipped.files == [str(tmp_path / "images" / "2.jpg")]
    # Evaluation leaves it out.
    assert sorted(by_image(make_batches(dataset, batch_size=2, min_size=32, max_size=64, max_boxes=4))) == [1, 3, 4]


def test_keras_iterates_it_with_worker_threads(photos):
    from keras.src.trainers.data_adapters import get_data_adapter

    ds = make_batches(photos, batch_size=2, min_size=64, max_size=64, max_boxes=4, training=True, repeat=True,
                      workers=2)
    iterator = get_data_adapter(ds, steps_per_epoch=5).get_numpy_iterator()
    seen = [next(iterator) for _ in range(5)]
    assert all(b["images"].shape == (2, 64, 64, 3) for b in seen)
    assert [sorted(b["image_id"].tolist()) for b in seen] == [sorted(ds[j]["image_id"].tolist()) for j in range(5)]


def test_too_few_images_for_a_training_batch_is_an_error(photos):
    with pytest.raises(DetectError, match="make no batch of 8"):
        DetectionBatches(photos, batch_size=8, min_size=64, max_size=64, training=True)
