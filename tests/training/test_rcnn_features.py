"""R-CNN feature cache: float16 on disk, memory-mapped features and metadata, the rows
and overlaps of each image, regression rows, and SVM training from the store."""

import os

import numpy as np
import pytest
import tensorflow as tf

from detect.training.rcnn_train import FeatureStore, extract_features, train_svms


class FakeModel:
    """Stands in for RCNN: feature of a box = [x1, y1, x2, y2, image index, 1e6] (the last
    one beyond float16's range), regression feature = the box repeated twice."""

    num_classes, feature_dim, regression_dim = 2, 6, 8
    pool5 = "vgg16-like: separate regression features"

    def chunked_region_features(self, images, boxes, box_indices):
        count = tf.shape(boxes)[0]
        features = tf.concat([boxes, tf.cast(box_indices, tf.float32)[:, None], tf.fill([count, 1], 1e6)], axis=1)
        return features, tf.concat([boxes, boxes], axis=1)


def batch(image_ids, gt_boxes, gt_labels, proposals):
    return {
        "images": tf.zeros((len(image_ids), 32, 32, 3)),
        "image_id": tf.constant(image_ids, tf.int64),
        "gt_boxes": tf.constant(gt_boxes, tf.float32),
        "gt_labels": tf.constant(gt_labels, tf.int32),
        "proposals": tf.constant(proposals, tf.float32),
    }


BATCHES = [
    # image 11: gt class 1 [0, 0, 10, 10] (+ a padding row); proposals: the gt shifted by
    # 1 px (IoU 9*10 / (2*100 - 90) = 90/110 = 0.818), a far box (IoU 0), a padding row.
    # image 12: no gt; one proposal.
    batch([11, 12],
          [[[0, 0, 10, 10], [0, 0, 0, 0]], [[0, 0, 0, 0], [0, 0, 0, 0]]],
          [[1, -1], [-1, -1]],
          [[[1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 0, 0]], [[2, 2, 8, 8], [0, 0, 0, 0], [0, 0, 0, 0]]]),
    # image 13: gt class 2 [5, 5, 15, 15]; proposal [5, 5, 15, 13] (IoU 80 / 100 = 0.8).
    batch([13], [[[5, 5, 15, 15], [0, 0, 0, 0]]], [[2, -1]], [[[5, 5, 15, 13], [0, 0, 0, 0], [0, 0, 0, 0]]]),
]


@pytest.fixture
def store(tmp_path):
    return extract_features(FakeModel(), BATCHES, str(tmp_path / "cache"), reg_iou=0.6, progress=False)


def test_features_are_float16_on_disk_and_memory_mapped(store, tmp_path):
    # Rows: image 11 gt, 2 proposals; image 12 one proposal; image 13 gt, one proposal = 6.
    assert store.features.shape == (6, 6) and store.features.dtype == np.float16
    assert isinstance(store.features, np.memmap)
    assert os.path.getsize(tmp_path / "cache" / "features.f16") == 6 * 6 * 2  # 2 bytes a value
    boxes = [[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [2, 2, 8, 8], [5, 5, 15, 15], [5, 5, 15, 13]]
    np.testing.assert_array_equal(store.features[:, :4], boxes)
    np.testing.assert_array_equal(store.features[:, 4], [0, 0, 0, 1, 0, 0])  # index in the batch
    assert (store.features[:, 5] == np.finfo(np.float16).max).all()  # 1e6 clipped, not inf
    np.testing.assert_array_equal(store.meta["boxes"], boxes)
    np.testing.assert_array_equal(store.meta["image"], [11, 11, 11, 12, 13, 13])
    np.testing.assert_array_equal(store.meta["gt_label"], [1, 0, 0, 0, 2, 0])
    assert isinstance(store.meta["class_iou"], np.memmap) and store.meta["class_iou"].dtype == np.float16
    # class_iou: row 1 overlaps the class-1 gt by 90/110; row 5 the class-2 gt by 0.8.
    np.testing.assert_allclose(store.meta["class_iou"][:, 0], [1, 90 / 110, 0, 0, 0, 0], atol=1e-3)
    np.testing.assert_allclose(store.meta["class_iou"][:, 1], [0, 0, 0, 0, 1, 0.8], atol=1e-3)


def test_regression_rows_and_features(store):
    # IoU >= 0.6: the two gt rows, the shifted proposal (0.818) and row 5 (0.8).
    np.testing.assert_array_equal(store.meta["reg_rows"], [0, 1, 4, 5])
    assert store.regression.dtype == np.float16 and store.regression.shape == (4, 8)
    np.testing.assert_array_equal(store.regression_features([1, 3]), [[1, 0, 11, 10] * 2, [5, 5, 15, 13] * 2])
    np.testing.assert_array_equal(store.meta["best_box"][[1, 5]], [[0, 0, 10, 10], [5, 5, 15, 15]])
    np.testing.assert_array_equal(store.meta["best_class"][[1, 5]], [1, 2])


def test_store_reopens_and_is_complete_only_with_its_index(store, tmp_path):
    folder = str(tmp_path / "cache")
    again = FeatureStore(folder)
    np.testing.assert_array_equal(again.features, store.features)
    assert FeatureStore.complete(folder)
    os.remove(os.path.join(folder, "store.json"))
    assert not FeatureStore.complete(folder)


def test_empty_split_gives_an_empty_store(tmp_path):
    empty = batch([1], [[[0, 0, 0, 0]]], [[-1]], [[[0, 0, 0, 0]]])
    store = extract_features(FakeModel(), [empty], str(tmp_path / "cache"), reg_iou=0.6, progress=False)
    assert store.features.shape == (0, 6) and store.meta["reg_rows"].shape == (0,)


def test_svms_from_the_store(store):
    r = {"feature_norm": 20.0, "neg_iou": 0.3, "hard_negative_rounds": 1, "initial_negatives": 10,
         "max_negatives": 100, "hard_threshold": -1.0, "evict_threshold": -1.2, "svm_solver": "liblinear",
         "svm_c": 1.0, "svm_pos_weight": 2.0, "svm_bias_scale": 1.0, "svm_epochs": 1}
    kernel, bias, summary = train_svms(store, 2, r, log=lambda *_: None)
    assert kernel.shape == (6, 2) and bias.shape == (2,)
    # Class 1's negatives are the rows with class-1 IoU < 0.3: 2, 3, 4, 5 (row 1 overlaps
    # 0.818 and is neither positive nor negative); all four start the cache.
    assert summary["1"][0]["training_negatives"] == 4 and summary["2"][0]["training_negatives"] == 4
    assert np.isfinite(kernel).all() and kernel.any()
