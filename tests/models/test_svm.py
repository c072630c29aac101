"""Linear SVMs with hard-negative mining on a memory-mapped feature store."""

import numpy as np
import pytest

from detect.models.svm import feature_scale, fit_linear_svm, hinge_losses, train_class_svms, train_svm


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
    first, second = svm.rounds
    assert second.training_negatives == 25
    # By hand: of the start set and the rows added, the 25 the round-0 SVM scores highest
    # are what round 1 trains on.
    union = np.union1d(first.added, second.added)
    assert len(union) > 25
    margins = np.asarray(store[union]) @ first.weights + first.bias
    hardest = np.sort(union[np.argsort(-margins, kind="stable")[:25]])
    x = np.concatenate([pos, np.asarray(store[hardest])])
    weights, bias = fit_linear_svm(x, np.concatenate([np.ones(len(pos)), -np.ones(25)]), **FIT)
    np.testing.assert_allclose(second.weights, weights, rtol=1e-5, atol=1e-6)
    assert second.bias == pytest.approx(bias, rel=1e-5, abs=1e-6)


def test_missing_positives_or_negatives_give_a_constant_margin(tmp_path):
    _, store, _ = toy_store(tmp_path)
    no_pos = train_svm(np.zeros((0, 2), np.float32), store, np.arange(len(store)), initial_negatives=10)
    assert not no_pos.weights.any() and no_pos.bias == -1.0
    no_neg = train_svm(np.ones((3, 2), np.float32), store, np.zeros(0, np.int64))
    assert not no_neg.weights.any() and no_neg.bias == 1.0
    assert len(no_neg.rounds) == 1


class CountingStore:
    """A read-only feature store that counts how often each row is read."""

    def __init__(self, array):
        self.array = array
        self.shape, self.dtype = array.shape, array.dtype
        self.reads = np.zeros(len(array), np.int64)

    def __len__(self):
        return len(self.array)

    def __getitem__(self, key):
        rows = np.arange(len(self.array))[key]
        np.add.at(self.reads, rows, 1)
        return self.array[key]


def three_class_store(tmp_path):
    """Three classes in 3-D: class k's positives near 2 * e_k. 600 float16 rows on disk:
    200 near -e_k of class k (hard for k only, their overlaps with class k's boxes random in
    [0, 0.6), so some are no candidate for k), and 60 near the origin, easy for every class
    (overlaps 0)."""
    rng = np.random.default_rng(3)
    eye = np.eye(3, dtype=np.float32)
    positives = [(2 * eye[k] + rng.normal(0, 0.2, (30, 3))).astype(np.float32) for k in range(3)]
    near = [-0.3 * eye[k] + rng.normal(0, 0.15, (180, 3)) for k in range(3)]
    rows = np.concatenate(near + [rng.normal(0, 0.05, (60, 3)) - 3.0]).astype(np.float16)
    overlaps = np.zeros((len(rows), 3), np.float16)
    for k in range(3):
        overlaps[180 * k : 180 * (k + 1), k] = rng.uniform(0, 0.6, 180)
    store = np.memmap(tmp_path / "features.f16", dtype=np.float16, mode="w+", shape=rows.shape)
    store[:] = rows
    store.flush()
    return positives, np.memmap(tmp_path / "features.f16", dtype=np.float16, mode="r", shape=rows.shape), overlaps


@pytest.mark.parametrize("max_negatives", [100000, 40])
def test_one_pass_gives_the_per_class_result(tmp_path, max_negatives):
    positives, store, overlaps = three_class_store(tmp_path)
    options = dict(rounds=3, initial_negatives=15, max_negatives=max_negatives, evict_threshold=-1.2,
                   scale=2.0, chunk_rows=64, **FIT)
    together = train_class_svms(positives, store, overlaps, neg_iou=0.3, seeds=[7, 8, 9], **options)
    for k in range(3):
        candidates = np.flatnonzero(overlaps[:, k].astype(np.float32) < 0.3)
        alone = train_svm(positives[k], store, candidates, seed=7 + k, **options)
        assert len(together[k].rounds) == len(alone.rounds) >= 2
        for a, b in zip(together[k].rounds, alone.rounds):
            np.testing.assert_array_equal(a.added, b.added)
            assert a.training_negatives == b.training_negatives
            assert a.hinge_after == pytest.approx(b.hinge_after, rel=1e-5, abs=1e-6)
        np.testing.assert_allclose(together[k].weights, alone.weights, rtol=1e-5, atol=1e-6)
        assert together[k].bias == pytest.approx(alone.bias, rel=1e-5, abs=1e-6)


def test_one_pass_reads_each_row_once_per_round_whatever_the_classes(tmp_path):
    positives, store, overlaps = three_class_store(tmp_path)
    counting = CountingStore(np.asarray(store))
    svms = train_class_svms(positives, counting, overlaps, rounds=2, initial_negatives=10, chunk_rows=50, seeds=[0, 1, 2], **FIT)
    # The 60 rows near -3 are easy for every class (margins far below -1): never hard,
    # never cached unless drawn for a start set. Class k scores the store in min(L_k, 2)
    # rounds (L_k trainings; it stops once a round finds no hard negative); one pass serves
    # every class still mining, so each easy row is read max_k min(L_k, 2) times. Mining
    # class by class reads it sum_k min(L_k, 2) times (scoring plus eviction scoring).
    started = np.concatenate([svm.rounds[0].added for svm in svms])
    easy = np.setdiff1d(np.arange(540, 600), started)
    assert len(easy) > 40
    active_rounds = [min(len(svm.rounds), 2) for svm in svms]
    assert min(active_rounds) >= 1
    np.testing.assert_array_equal(counting.reads[easy], max(active_rounds))
    per_class = CountingStore(np.asarray(store))
    for k in range(3):
        train_svm(positives[k], per_class, np.flatnonzero(overlaps[:, k] < 0.3), rounds=2, initial_negatives=10,
                  chunk_rows=50, seed=k, **FIT)
    assert (per_class.reads[easy] >= sum(active_rounds)).all()
    assert sum(active_rounds) > max(active_rounds)
