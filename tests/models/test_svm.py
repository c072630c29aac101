"""Linear SVMs with hard-negative mining on a memory-mapped feature store."""

import numpy as np
import pytest

from detect.models.svm import feature_scale, fit_linear_svm, hinge_losses, train_svm


def test_hinge_losses_by_hand():
    x = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]], np.float32)
    w = np.array([1.0, 1.0], np.float32)
    # margins x @ w - 1 = 0, 1, 5.
    # +1 at margin 0: 1 - 0 = 1; -1 at margin 1: 1 + 1 = 2; +1 at margin 5: max(0, -4) = 0.
    losses = hinge_losses(x, np.array([1, -1, 1]), w, -1.0)
    np.testing.assert_allclose(losses, [1.0, 2.0, 0.0])


def test_feature_scale_brings_mean_norm_to_target():
    # Norms 3 and 4, mean 3.5: a target of 7 needs a factor 2.
    assert feature_scale(np.array([[3.0, 0.0], [0.0, 4.0]]), target_norm=7.0) == pytest.approx(2.0)
    assert feature_scale(np.zeros((0, 3))) == 1.0


@pytest.mark.parametrize("solver", ["liblinear", "keras"])
def test_both_solvers_separate_separable_data(solver):
    rng = np.random.default_rng(0)
    pos = rng.normal([2.0, 2.0], 0.3, (40, 2))
    neg = rng.normal([-2.0, -2.0], 0.3, (60, 2))
    x = np.concatenate([pos, neg]).astype(np.float32)
    y = np.concatenate([np.ones(40), -np.ones(60)])
    weights, bias = fit_linear_svm(x, y, solver=solver, C=1.0, epochs=40)
    margins = x @ weights + bias
    assert (margins[:40] > 0).all() and (margins[40:] < 0).all()


def test_unknown_solver_is_refused():
    with pytest.raises(ValueError, match="solver"):
        fit_linear_svm(np.zeros((2, 1)), [1, -1], solver="sgd")


# A bias feature of 1 (not R-CNN's 10): liblinear converges slowly on separable 2-D data
# when the bias feature dwarfs the features.
FIT = {"C": 1.0, "bias_scale": 1.0}


def toy_store(tmp_path):
    """Positives at x in [1, 2]; 400 easy negatives at x in [-4, -3]; 30 hard ones at x in
    [-0.4, -0.2], between the two. Negatives live in a disk memmap."""
    rng = np.random.default_rng(1)
    pos = np.stack([rng.uniform(1.0, 2.0, 50), rng.uniform(-1, 1, 50)], axis=1).astype(np.float32)
    easy = np.stack([rng.uniform(-4.0, -3.0, 400), rng.uniform(-1, 1, 400)], axis=1)
    hard = np.stack([rng.uniform(-0.4, -0.2, 30), rng.uniform(-1, 1, 30)], axis=1)
    rows = np.concatenate([easy, hard]).astype(np.float32)
    store = np.memmap(tmp_path / "features.f32", dtype=np.float32, mode="w+", shape=rows.shape)
    store[:] = rows
    store.flush()
    store = np.memmap(tmp_path / "features.f32", dtype=np.float32, mode="r", shape=rows.shape)
    return pos, store, np.arange(400, 430)


def test_hard_negative_mining_adds_what_the_previous_svm_got_wrong(tmp_path):
    pos, store, hard_rows = toy_store(tmp_path)
    candidates = np.arange(len(store))
    svm = train_svm(pos, store, candidates, rounds=2, initial_negatives=20, seed=0, **FIT)
    first, second = svm.rounds[0], svm.rounds[1]
    assert len(first.added) == first.training_negatives == 20
    # Round 1 adds exactly the candidates the round-0 SVM scores above -1 that were not
    # cached yet, and trains on them together with the start set.
    margins = np.asarray(store) @ first.weights + first.bias
    expected = np.setdiff1d(np.flatnonzero(margins > -1.0), first.added)
    np.testing.assert_array_equal(second.added, expected)
    assert len(second.added) > 0 and np.isin(second.added, hard_rows).any()
    assert not np.isin(second.added, first.added).any()
    assert second.training_negatives == len(np.union1d(first.added, second.added))
    # Their hinge loss (label -1: max(0, 1 + margin)) drops once they are trained on.
    before = np.maximum(0, 1 + np.asarray(store[second.added]) @ first.weights + first.bias).mean()
    after = np.maximum(0, 1 + np.asarray(store[second.added]) @ second.weights + second.bias).mean()
    assert second.hinge_before == pytest.approx(before, rel=1e-4)
    assert second.hinge_after == pytest.approx(after, rel=1e-4)
    assert after < before
    # The final SVM puts every hard negative on the negative side.
    assert (np.asarray(store[hard_rows]) @ svm.weights + svm.bias < 0).all()
    assert (pos @ svm.weights + svm.bias > 0).all()


def test_chunked_scoring_and_scale_do_not_change_the_result(tmp_path):
    pos, store, _ = toy_store(tmp_path)
    candidates = np.arange(len(store))
    whole = train_svm(pos, store, candidates, rounds=1, initial_negatives=20, chunk_rows=10**6, **FIT)
    chunked = train_svm(pos, store, candidates, rounds=1, initial_negatives=20, chunk_rows=7, **FIT)
    np.testing.assert_allclose(chunked.weights, whole.weights)
    np.testing.assert_array_equal(chunked.rounds[1].added, whole.rounds[1].added)
    # Weights come back on unscaled features: margins keep their sign under any scale.
    scaled = train_svm(pos, store, candidates, rounds=1, initial_negatives=20, scale=4.0, **FIT)
    assert (np.asarray(store[400:]) @ scaled.weights + scaled.bias < 0).all()


def test_cache_limit_keeps_the_hardest(tmp_path):
    pos, store, _ = toy_store(tmp_path)
    svm = train_svm(pos, store, np.arange(len(store)), rounds=1, initial_negatives=20, max_negatives=25, **FIT)
    assert svm.rounds[1].training_negatives == 25


def test_missing_positives_or_negatives_give_a_constant_margin(tmp_path):
    _, store, _ = toy_store(tmp_path)
    no_pos = train_svm(np.zeros((0, 2), np.float32), store, np.arange(len(store)), initial_negatives=10)
    assert not no_pos.weights.any() and no_pos.bias == -1.0
    no_neg = train_svm(np.ones((3, 2), np.float32), store, np.zeros(0, np.int64))
    assert not no_neg.weights.any() and no_neg.bias == 1.0
    assert len(no_neg.rounds) == 1
