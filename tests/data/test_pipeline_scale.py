"""Pipeline at scale: nothing proportional to the dataset in the graph, a uint8 image
cache read by index, proposals read per image from a proposal file."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from detect.data.image_cache import ImageCache
from detect.data.pipeline import SkippedImages, make_dataset
from detect.data.records import Dataset, Record
from detect.errors import DetectError
from detect.proposals.cache import load_proposals, write_proposals


def _records(folder, sizes, write=True):
    """One record per (height, width); image i is filled with value 10 * i (PNG, exact)."""
    records = []
    for i, (h, w) in enumerate(sizes, start=1):
        path = folder / f"{i}.png"
        if write:
            Image.fromarray(np.full((h, w, 3), 10 * i, np.uint8)).save(path)
        boxes = [[1, 1, w - 1, h - 1], [0, 0, w / 2, h / 2]]
        records.append(Record(i, path.name, str(path), w, h, boxes=boxes, labels=[1, 2]))
    return Dataset(["a", "b"], records, source=str(folder / "x.json"))


def _largest_constant(ds):
    """Element count of the largest constant in the dataset's graph (functions included)."""
    graph = tf.compat.v1.GraphDef.FromString(ds._as_serialized_graph().numpy())
    nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
    largest = 0
    for node in nodes:
        if node.op == "Const":
            dims = [d.size for d in node.attr["value"].tensor.tensor_shape.dim]
            largest = max(largest, int(np.prod(dims)) if dims else 1)
    return largest


@pytest.mark.parametrize("with_proposals", [False, True])
def test_graph_holds_nothing_proportional_to_the_dataset(tmp_path, with_proposals):
    # 3000 records (no image is read to build the graph), 2000 proposals each in the old
    # design would be a (3000, 2000, 4) constant; boxes a (3000, 100, 4) one.
    dataset = _records(tmp_path, [(40, 60)] * 3000, write=False)
    props = None
    if with_proposals:
        props = str(tmp_path / "p.npz")
        write_proposals(props, dataset, ((r.image_id, r.boxes) for r in dataset.records), {"source": "test"})
    sizes = {}
    for n in (10, 3000):
        part = Dataset(dataset.classes, dataset.records[:n], source=dataset.source)
        ds = make_dataset(part, batch_size=2, min_size=32, max_size=64, training=True, flip=True,
                          cache=True, proposals=props, num_proposals=2000)
        sizes[n] = (_largest_constant(ds), len(ds._as_serialized_graph().numpy()))
    assert sizes[3000][0] < 100  # scalars, shapes and the pad colour only
    # The graph does not grow with the dataset (a few bytes for the range's end).
    assert abs(sizes[3000][1] - sizes[10][1]) < 16, sizes


def test_image_cache_holds_uint8_by_index(tmp_path):
    dataset = _records(tmp_path, [(4, 6), (3, 5)])
    cache = ImageCache(dataset, folder=str(tmp_path / "cache"))
    # 4*6*3 + 3*5*3 = 72 + 45 = 117 bytes: uint8 pixels of the original sizes.
    assert cache.total_bytes == 117
    assert cache.get(1) is None
    image = np.arange(45, dtype=np.uint8).reshape(3, 5, 3)
    cache.put(1, image)
    got = cache.get(1)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, image)
    cache.put(0, np.zeros((5, 5, 3), np.uint8))  # not the record's size: not cached
    assert cache.get(0) is None
    assert list((tmp_path / "cache").iterdir()) == []  # the file is unlinked at once
    cache.close()


def test_cached_pipeline_reads_images_once_and_reshuffles(tmp_path):
    dataset = _records(tmp_path, [(20, 30), (30, 20), (24, 24), (20, 40)])
    skipped = SkippedImages(len(dataset))
    ds = make_dataset(dataset, batch_size=1, min_size=32, max_size=64, training=True,
                      cache=True, seed=1, skipped=skipped)

    def epoch():
        return {int(b["image_id"][0]): b["images"][0].numpy() for b in ds}, [int(b["image_id"][0]) for b in ds]

    first, _ = epoch()
    for path in tmp_path.glob("*.png"):
        path.unlink()  # later epochs must come from the cache
    orders = set()
    for _ in range(4):
        pixels, order = epoch()
        orders.add(tuple(order))
        assert sorted(pixels) == [1, 2, 3, 4]
        for image_id, image in pixels.items():
            np.testing.assert_array_equal(image, first[image_id])
    assert skipped.count == 0
    assert len(orders) > 1  # indices are reshuffled every epoch, cache or not


def test_proposals_are_read_per_image_from_a_file(tmp_path):
    dataset = _records(tmp_path, [(20, 30), (30, 20), (24, 24)])
    path = str(tmp_path / "props.npz")
    # Image 2 gets one proposal only; the others their two gt boxes.
    items = [(r.image_id, r.boxes[:1] if r.image_id == 2 else r.boxes) for r in dataset.records]
    write_proposals(path, dataset, items, {"source": "test"})
    with load_proposals(path) as f:
        assert f.settings == {"max_proposals": 2, "source": "test"}
    ds = make_dataset(dataset, batch_size=3, min_size=48, max_size=48, proposals=path)
    (batch,) = list(ds)
    assert batch["proposals"].shape == (3, 2, 4)
    for i, image_id in enumerate(batch["image_id"].numpy()):
        rows = 1 if image_id == 2 else 2
        np.testing.assert_allclose(batch["proposals"][i, :rows], batch["gt_boxes"][i, :rows], atol=1e-4)
        np.testing.assert_array_equal(batch["proposals"][i, rows:], 0)
    # num_proposals below the file's maximum keeps the first rows.
    (batch,) = list(make_dataset(dataset, batch_size=3, min_size=48, max_size=48, proposals=path, num_proposals=1))
    assert batch["proposals"].shape == (3, 1, 4)


def test_canvas_smaller_than_the_rule_is_an_error(tmp_path):
    dataset = _records(tmp_path, [(20, 30)])
    with pytest.raises(DetectError, match=r"input.canvas \[32, 128\] is smaller .* at least \[64, 128\]"):
        make_dataset(dataset, batch_size=1, min_size=64, max_size=128, canvas_size=(32, 128))
