"""Truncated SVD of fc6/fc7: exact at full rank, optimal error at rank r, fewer parameters,
weights outside fc6/fc7 untouched, .keras round trip, clear errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from detect.errors import DetectError
from detect.models.backbones import build_backbone
from detect.models.svd import factorize, parse_ranks, truncate_head
from test_detector import CLASSES, batch, small_model


def inputs():
    return {k: v for k, v in batch().items() if not k.startswith("gt_")}


def detections(model):
    return {k: v.numpy() for k, v in model.predict_step(inputs()).items()}


def full_kernel(model, layer):
    head = model.roi_heads.box_head
    return head.get_layer(f"{layer}_svd").kernel.numpy() @ head.get_layer(layer).kernel.numpy()


def assert_same_detections(a, b):
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-4, err_msg=key)


@pytest.fixture(scope="module")
def model():
    tf.keras.utils.set_random_seed(0)
    return small_model()  # tiny: fc6 3136 x 32 (7 * 7 * 64 pooled features), fc7 32 x 32


def test_parse_ranks():
    assert parse_ranks("1024,256") == (1024, 256)
    assert parse_ranks(" 8 , 4 ") == (8, 4)
    for bad in ("1024", "a,b", "0,4", "1,2,3", ""):
        with pytest.raises(DetectError, match="two positive integers"):
            parse_ranks(bad)


def test_rank_one_of_a_hand_matrix():
    # W = [[2, 2], [1, -1]]: W^T W = [[5, 3], [3, 5]], eigenvalues 8 and 2, so singular values
    # 2*sqrt(2) and sqrt(2). The top right-singular vector is v = (1, 1) / sqrt(2):
    # W v v^T = [[2, 2], [0, 0]]; the error [[0, 0], [1, -1]] has squared norm 2 = sqrt(2)^2.
    kernel = np.array([[2.0, 2.0], [1.0, -1.0]])
    first, second = factorize(kernel, 1)
    assert first.shape == (2, 1) and second.shape == (1, 2)
    np.testing.assert_allclose(first @ second, [[2.0, 2.0], [0.0, 0.0]], atol=1e-12)
    assert np.sum((kernel - first @ second) ** 2) == pytest.approx(2.0)
    np.testing.assert_allclose(np.matmul(*factorize(kernel, 2)), kernel, atol=1e-12)


def test_error_is_the_energy_of_dropped_singular_values():
    kernel = np.random.default_rng(0).normal(size=(6, 4))
    sigma = np.linalg.svd(kernel, compute_uv=False)
    for rank in (1, 2, 3, 4):
        first, second = factorize(kernel, rank)
        error = np.sum((kernel - first @ second) ** 2)
        assert error == pytest.approx(np.sum(sigma[rank:] ** 2), abs=1e-9)
    with pytest.raises(DetectError, match="outside 1..4"):
        factorize(kernel, 5)


def test_full_rank_gives_the_same_detections(model):
    truncated = truncate_head(model, (10**6, 10**6))
    # Ranks are clipped to min(in, out): fc6 min(3136, 32) = 32, fc7 min(32, 32) = 32.
    assert truncated.head_svd_ranks == (32, 32)
    assert_same_detections(detections(truncated), detections(model))


def test_weights_outside_fc6_fc7_are_copied(model):
    truncated = truncate_head(model, (8, 4))
    for part in (lambda m: m.backbone, lambda m: m.rpn, lambda m: m.roi_heads.predictor):
        assert len(part(model).weights) == len(part(truncated).weights) > 0
        for old, new in zip(part(model).weights, part(truncated).weights):
            np.testing.assert_array_equal(new.numpy(), old.numpy())
    for layer in ("fc6", "fc7"):
        old, new = model.roi_heads.box_head.get_layer(layer), truncated.roi_heads.box_head.get_layer(layer)
        np.testing.assert_array_equal(new.bias.numpy(), old.bias.numpy())
        assert new.activation is keras.activations.relu
        assert not truncated.roi_heads.box_head.get_layer(f"{layer}_svd").use_bias
    first, second = factorize(model.roi_heads.box_head.get_layer("fc7").kernel.numpy(), 4)
    np.testing.assert_allclose(full_kernel(truncated, "fc7"), first @ second, atol=1e-5)


def test_fewer_parameters(model):
    truncated = truncate_head(model, (4, 2))
    # fc6 3136*32 + 32 = 100384 -> 3136*4 + 4*32 + 32 = 12704;
    # fc7 32*32 + 32 = 1056 -> 32*2 + 2*32 + 32 = 160. Head: 101440 -> 12864.
    assert model.roi_heads.box_head.count_params() == 101440
    assert truncated.roi_heads.box_head.count_params() == 12864
    assert model.count_params() - truncated.count_params() == 101440 - 12864


def test_truncating_twice_equals_truncating_once(model):
    # The top-2 singular triples of the rank-8 approximation are those of the original.
    twice = truncate_head(truncate_head(model, (8, 8)), (4, 2))
    once = truncate_head(model, (4, 2))
    for layer in ("fc6", "fc7"):
        kernels = [full_kernel(m, layer) for m in (once, twice)]
        np.testing.assert_allclose(kernels[1], kernels[0], atol=1e-5)


def test_save_load_round_trip(model, tmp_path):
    truncated = truncate_head(model, (4, 2))
    path = str(tmp_path / "model.keras")
    truncated.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    assert loaded.head_svd_ranks == (4, 2)
    assert loaded.class_names == CLASSES
    assert_same_detections(detections(loaded), detections(truncated))


def test_bad_ranks_raise(model):
    for bad in ((0, 4), (4,), ("a", 2)):
        with pytest.raises(DetectError, match="two positive integers"):
            truncate_head(model, bad)


def test_resnet_head_raises():
    resnet = small_model("resnet50")
    with pytest.raises(DetectError, match="box head is `res5_head`"):
        truncate_head(resnet, (4, 2))
    with pytest.raises(DetectError, match="res5 head"):
        build_backbone("resnet50", head_svd_ranks=(4, 2))
