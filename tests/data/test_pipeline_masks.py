"""Instance masks in both input pipelines (tf.data, PyDataset): decoded, resized, flipped and
padded with their boxes."""

import numpy as np
import pytest

from detect.data.pipeline import make_dataset as tf_data
from detect.data.pydataset import make_batches
from detect.data.records import Dataset, Record

LOADERS = {"tf_data": tf_data, "pydataset": make_batches}


@pytest.fixture(params=sorted(LOADERS))
def make_dataset(request):
    """pipeline.make_dataset or pydataset.make_batches: each test runs on both."""
    def make(*args, **kwargs):
        return [{k: np.asarray(v) for k, v in batch.items()} for batch in LOADERS[request.param](*args, **kwargs)]

    return make


def _dataset(tmp_path, masks):
    from PIL import Image

    Image.new("RGB", (40, 20)).save(tmp_path / "a.png")
    Image.new("RGB", (40, 20)).save(tmp_path / "b.png")
    # Image a (40x20 WxH): a polygon mask of pixels x 4..11, y 2..9 (box 4, 2, 12, 10) and a
    # box without a mask; image b: no objects at all.
    a = Record(1, "a.png", str(tmp_path / "a.png"), 40, 20, [[4, 2, 12, 10], [20, 5, 30, 15]], [1, 2],
               masks=masks)
    b = Record(2, "b.png", str(tmp_path / "b.png"), 40, 20)
    return Dataset(classes=["x", "y"], records=[a, b])


def test_masks_follow_the_resize_and_pad(tmp_path, make_dataset):
    dataset = _dataset(tmp_path, [[[4, 2, 12, 2, 12, 10, 4, 10]], None])
    # min_size 40, max_size 80: 40x20 -> 80x40 (scale 2), canvas 64 x 96 (rounded to 32).
    ds = make_dataset(dataset, batch_size=2, min_size=40, max_size=80, max_boxes=3, masks=True)
    batch = ds[0]
    masks, valid = batch["gt_masks"], batch["gt_mask_valid"]
    assert masks.shape == (2, 3, 64, 96) and masks.dtype == np.uint8
    # Scale 2: pixels x 4..11 -> 8..23, y 2..9 -> 4..19, the box (8, 4, 24, 20).
    expected = np.zeros((64, 96), np.uint8)
    expected[4:20, 8:24] = 1
    np.testing.assert_array_equal(masks[0, 0], expected)
    np.testing.assert_array_equal(batch["gt_boxes"][0, 0], [8, 4, 24, 20])
    # The box without a mask, the padding row and the negative image: zero and not valid.
    np.testing.assert_array_equal(valid, [[True, False, False], [False, False, False]])
    assert masks[0, 1:].sum() == 0 and masks[1].sum() == 0


def test_flipped_masks_stay_with_their_boxes(tmp_path, make_dataset):
    dataset = _dataset(tmp_path, [[[4, 2, 12, 2, 12, 10, 4, 10]], None])
    seen = set()
    batches = [batch for seed in range(6) for batch in make_dataset(
        dataset, batch_size=1, min_size=20, max_size=40, max_boxes=2, masks=True, training=True, flip=True,
        seed=seed, drop_remainder=False)]
    for batch in batches:
        box, mask = batch["gt_boxes"][0, 0], batch["gt_masks"][0, 0]
        if batch["gt_mask_valid"][0, 0]:
            x1, y1, x2, y2 = box.astype(int)
            # The mask fills exactly its (flipped or not) box.
            assert mask[y1:y2, x1:x2].all() and mask.sum() == (x2 - x1) * (y2 - y1)
            seen.add(int(x1))
    assert seen == {4, 40 - 12}  # both the original and the mirrored box came by


def test_boxes_only_pipeline_has_no_mask_keys(tmp_path, make_dataset):
    dataset = _dataset(tmp_path, None)
    batch = (make_dataset(dataset, batch_size=2, min_size=20, max_size=40, max_boxes=2))[0]
    assert "gt_masks" not in batch and "gt_mask_valid" not in batch
    batch = (make_dataset(dataset, batch_size=2, min_size=20, max_size=40, max_boxes=2, masks=True))[0]
    assert batch["gt_masks"].sum() == 0 and not batch["gt_mask_valid"].any()
