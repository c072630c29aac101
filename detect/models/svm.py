"""Per-class linear SVMs with hard-negative mining, on features cached on disk.

Shape shorthand: D feature width, Np positives of a class, R rows of the feature store
(every cached region of the training set), C candidate negative rows of a class, K classes.

The feature store is any 2-D array-like indexable by row arrays, typically a read-only
np.memmap: candidates are scored in chunks of `chunk_rows`, so only the positives and the
current cache of hard negatives are ever in memory, and a training set larger than RAM
still trains.

Mining follows the R-CNN code (rcnn_train.m): start from a random sample of negatives;
each round scores every candidate with the current SVM, adds the ones scoring above
`hard_threshold` (-1: inside the margin or wrong side) that are not cached yet,
retrains, and evicts cached negatives the new SVM scores below `evict_threshold`
(easy ones). The objective is liblinear's L2-regularized hinge loss
0.5 |w|^2 + C sum_i weight_i max(0, 1 - y_i (w x_i + b)), positives weighted
`pos_weight`, features scaled to a mean L2 norm of 20 (see feature_scale).

`train_svm` mines one class; `train_class_svms` mines all K classes with the same result
but one read of the store per round: each chunk is scored by all K SVMs at once (a
(chunk, D) @ (D, K) product) instead of the store being read once per class.
"""

import dataclasses
import time

import numpy as np

SOLVERS = ("liblinear", "keras")
_MIN_KERAS_STEPS = 500


@dataclasses.dataclass
class MiningRound:
    """One training round: `added` rows joined the cache before it (round 0: the random
    start) and `training_negatives` negatives trained it; hinge losses are the mean over
    the added rows under the SVM before / after this round's training (before is None in
    round 0); weights (D,) and bias are this round's SVM on unscaled features."""

    index: int
    added: np.ndarray
    training_negatives: int
    hinge_before: float | None
    hinge_after: float
    seconds: float
    weights: np.ndarray
    bias: float


@dataclasses.dataclass
class LinearSVM:
    """weights (D,), bias: margin = x @ weights + bias on unscaled features."""

    weights: np.ndarray
    bias: float
    rounds: list

    def margins(self, x):
        return np.asarray(x, np.float32) @ self.weights + self.bias


def feature_scale(features, target_norm=20.0, sample_rows=10000, seed=0):
    """Factor s that brings the mean L2 norm of rows of `features` (R, D) to target_norm,
    estimated on up to `sample_rows` random rows (the R-CNN code's rcnn_scale_features)."""
    count = len(features)
    if count == 0:
        return 1.0
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(count, size=min(sample_rows, count), replace=False))
    norms = np.linalg.norm(np.asarray(features[rows], np.float64), axis=1)
    mean = float(norms.mean())
    return target_norm / mean if mean > 0 else 1.0


def hinge_losses(x, y, weights, bias):
    """(M,) max(0, 1 - y (x @ weights + bias)) for x (M, D), y (M,) in {-1, +1}."""
    margins = np.asarray(x, np.float32) @ weights + bias
    return np.maximum(0.0, 1.0 - np.asarray(y, np.float32) * margins)


def fit_linear_svm(x, y, *, solver="liblinear", C=0.001, pos_weight=2.0, bias_scale=10.0, epochs=30, seed=0):
    """Train one linear SVM; x (M, D) float32, y (M,) in {-1, +1}. Returns (weights (D,), bias).

    liblinear: sklearn LinearSVC (dual coordinate descent, hinge loss, a bias feature of
    value `bias_scale` that is regularized like the weights, as in the R-CNN code).
    keras: a Dense(1) layer trained with Adam on the same objective divided by C * M
    (mean weighted hinge + |w|^2 / (2 C M)); the bias is not regularized.
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    x = np.asarray(x, np.float32)
    y = np.where(np.asarray(y) > 0, 1, -1).astype(np.int32)
    if solver == "liblinear":
        from sklearn.svm import LinearSVC

        svc = LinearSVC(
            C=C, loss="hinge", dual=True, intercept_scaling=bias_scale, class_weight={1: pos_weight, -1: 1.0},
            max_iter=10000, tol=1e-4, random_state=seed,
        )
        svc.fit(x, y)
        return svc.coef_[0].astype(np.float32), float(svc.intercept_[0])
    return _fit_keras(x, y, C=C, pos_weight=pos_weight, epochs=epochs, seed=seed)


def _fit_keras(x, y, *, C, pos_weight, epochs, seed, batch=256):
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    layer = keras.layers.Dense(1)
    layer.build((None, x.shape[1]))
    l2 = 1.0 / (2.0 * C * len(x))
    # Small sets get more epochs: Adam needs a few hundred steps whatever the data size.
    steps = max(int(epochs) * -(-len(x) // batch), _MIN_KERAS_STEPS)
    optimizer = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(1e-2, steps))
    weights = np.where(y > 0, pos_weight, 1.0).astype(np.float32)
    data = tf.data.Dataset.from_tensor_slices((x, y.astype(np.float32), weights))
    data = data.shuffle(len(x), seed=seed).repeat().batch(batch).take(steps)

    @tf.function
    def train():
        # One graph for the whole loop: per-step Python calls would dominate on small sets.
        for xb, yb, wb in data:
            with tf.GradientTape() as tape:
                margins = layer(xb)[:, 0]
                hinge = keras.losses.hinge(yb[:, None], margins[:, None])
                loss = tf.reduce_mean(wb * hinge) + l2 * tf.reduce_sum(tf.square(layer.kernel))
            grads = tape.gradient(loss, layer.trainable_variables)
            optimizer.apply_gradients(zip(grads, layer.trainable_variables))

    train()
    kernel, bias = layer.get_weights()
    return kernel[:, 0].astype(np.float32), float(bias[0])


def _score_candidates(features, candidates, weights, bias, scale, chunk_rows):
    """(C,) margins of the candidate rows, read from the store chunk by chunk."""
    out = np.empty(len(candidates), np.float32)
    for start in range(0, len(candidates), chunk_rows):
        rows = candidates[start : start + chunk_rows]
        out[start : start + len(rows)] = (np.asarray(features[rows], np.float32) * scale) @ weights + bias
    return out


def _read(features, rows, scale):
    return np.asarray(features[np.sort(rows)], np.float32) * scale if len(rows) else None


def train_svm(
    positives,
    features,
    candidates,
    *,
    scale=1.0,
    rounds=2,
    initial_negatives=5000,
    max_negatives=100000,
    hard_threshold=-1.0,
    evict_threshold=-1.2,
    chunk_rows=16384,
    seed=0,
    **fit_kwargs,
):
    """One class's SVM with hard-negative mining.

    Args:
      positives: (Np, D) features of the class's ground-truth boxes.
      features: (R, D) feature store (np.memmap) holding the negatives.
      candidates: (C,) int rows of `features` that may serve as negatives (IoU < 0.3
        with every box of the class).
      scale: features (positives too) are multiplied by it before training.
      rounds: mining rounds after the initial training (0 = random negatives only).
      initial_negatives: size of the random start.
      max_negatives: cache limit; beyond it the highest-scoring negatives are kept.
      fit_kwargs: passed to fit_linear_svm (solver, C, pos_weight, bias_scale, epochs).
    Returns:
      LinearSVM on unscaled features, with one MiningRound per training.
    """
    candidates = np.sort(np.asarray(candidates, np.int64))
    pos = np.asarray(positives, np.float32) * scale
    rng = np.random.default_rng(seed)
    start = min(int(initial_negatives), len(candidates))
    cache = np.sort(rng.choice(candidates, size=start, replace=False)) if start else np.zeros(0, np.int64)
    began = time.perf_counter()
    weights, bias = _train_round(pos, features, cache, scale, fit_kwargs, seed)
    first = _mean_hinge(features, cache, scale, weights, bias, chunk_rows)
    history = [MiningRound(0, cache.copy(), len(cache), None, first, time.perf_counter() - began, weights * scale, bias)]
    for index in range(1, int(rounds) + 1):
        began = time.perf_counter()
        margins = _score_candidates(features, candidates, weights, bias, scale, chunk_rows)
        hard = candidates[(margins > hard_threshold) & ~np.isin(candidates, cache)]
        if len(hard) == 0:
            break
        before = _mean_hinge(features, hard, scale, weights, bias, chunk_rows)
        cache = np.union1d(cache, hard)
        if len(cache) > max_negatives:
            cache = _hardest(features, cache, scale, weights, bias, max_negatives, chunk_rows)
        training_negatives = len(cache)
        weights, bias = _train_round(pos, features, cache, scale, fit_kwargs, seed)
        after = _mean_hinge(features, hard, scale, weights, bias, chunk_rows)
        cache_margins = _score_candidates(features, cache, weights, bias, scale, chunk_rows)
        cache = cache[cache_margins >= evict_threshold]
        seconds = time.perf_counter() - began
        history.append(MiningRound(index, hard, training_negatives, before, after, seconds, weights * scale, bias))
    return LinearSVM(weights * scale, bias, history)


def _hardest(features, rows, scale, weights, bias, limit, chunk_rows):
    margins = _score_candidates(features, rows, weights, bias, scale, chunk_rows)
    return np.sort(rows[np.argsort(-margins, kind="stable")[:limit]])


def _mean_hinge(features, rows, scale, weights, bias, chunk_rows=16384):
    """Mean hinge loss of negative rows (label -1): max(0, 1 + margin), read in chunks."""
    if len(rows) == 0:
        return 0.0
    margins = _score_candidates(features, np.sort(rows), weights, bias, scale, chunk_rows)
    return float(np.maximum(0.0, 1.0 + margins).mean())


def _train_round(pos, features, cache, scale, fit_kwargs, seed):
    neg = _read(features, cache, scale)
    if neg is None or len(pos) == 0:
        # One side is missing: a constant margin that ranks nothing above anything.
        return np.zeros(pos.shape[1], np.float32), (1.0 if neg is None else -1.0)
    x = np.concatenate([pos, neg])
    y = np.concatenate([np.ones(len(pos)), -np.ones(len(neg))])
    return fit_linear_svm(x, y, seed=seed, **fit_kwargs)


@dataclasses.dataclass
class _ClassMining:
    """Mining state of one class: scaled positives (Np, D), sorted cache rows, the current
    SVM on scaled features, its history, and whether mining still finds hard negatives."""

    pos: np.ndarray
    cache: np.ndarray
    weights: np.ndarray
    bias: float
    seed: int
    rounds: list
    active: bool = True


def train_class_svms(
    positives,
    features,
    overlaps,
    *,
    neg_iou=0.3,
    scale=1.0,
    rounds=2,
    initial_negatives=5000,
    max_negatives=100000,
    hard_threshold=-1.0,
    evict_threshold=-1.2,
    chunk_rows=16384,
    seeds=None,
    **fit_kwargs,
):
    """The SVMs of all K classes with hard-negative mining, one pass over the store a round.

    Gives what `train_svm` gives for each class k with candidates = rows whose
    overlaps[:, k] < neg_iou and seed seeds[k] (up to float rounding of the margins).

    Args:
      positives: K arrays (Np_k, D), the features of each class's ground-truth boxes.
      features: (R, D) feature store (float16 or float32 np.memmap), read in contiguous
        chunks of `chunk_rows` rows.
      overlaps: (R, K) array-like, the best IoU of each row with a gt box of each class.
      seeds: K seeds (default 0..K-1); other arguments as in train_svm.
    Returns:
      K LinearSVMs (unscaled features), each with its MiningRounds.
    RAM: while scoring, one chunk (chunk_rows x D float32) and its (chunk_rows, K)
    margins; while training, one class's (Np + cache) x D float32 rows (and the solver's
    copy); otherwise only row indices.
    """
    seeds = list(range(len(positives))) if seeds is None else [int(s) for s in seeds]
    states = [
        _start_class(k, positives[k], features, overlaps, neg_iou, scale, initial_negatives, seeds[k], chunk_rows, fit_kwargs)
        for k in range(len(positives))
    ]
    for index in range(1, int(rounds) + 1):
        active = [k for k, state in enumerate(states) if state.active]
        if not active:
            break
        began = time.perf_counter()
        evict = evict_threshold if index > 1 else None  # round 0's start set is not evicted
        found = _mining_pass(features, overlaps, active, [states[k] for k in active], neg_iou, scale,
                             hard_threshold, evict, chunk_rows)
        share = (time.perf_counter() - began) / len(active)
        for k, (kept, kept_margins, hard, hard_margins) in zip(active, found):
            _next_round(states[k], index, kept, kept_margins, hard, hard_margins, features, scale,
                        max_negatives, chunk_rows, fit_kwargs, share)
    return [LinearSVM(state.weights * scale, state.bias, state.rounds) for state in states]


def _start_class(k, positives, features, overlaps, neg_iou, scale, initial_negatives, seed, chunk_rows, fit_kwargs):
    """Round 0 of class k: a random start set of its candidates and the first SVM."""
    began = time.perf_counter()
    candidates = np.flatnonzero(np.asarray(overlaps[:, k], np.float32) < neg_iou)
    pos = np.asarray(positives, np.float32) * scale
    rng = np.random.default_rng(seed)
    start = min(int(initial_negatives), len(candidates))
    cache = np.sort(rng.choice(candidates, size=start, replace=False)) if start else np.zeros(0, np.int64)
    del candidates
    weights, bias = _train_round(pos, features, cache, scale, fit_kwargs, seed)
    first = _mean_hinge(features, cache, scale, weights, bias, chunk_rows)
    history = [MiningRound(0, cache.copy(), len(cache), None, first, time.perf_counter() - began, weights * scale, bias)]
    return _ClassMining(pos, cache, weights, bias, seed, history)


def _mining_pass(features, overlaps, classes, states, neg_iou, scale, hard_threshold, evict_threshold, chunk_rows):
    """Score every row once with the SVMs of `classes` (indices into overlaps' columns).

    Returns per class (kept cache rows, their margins, hard rows, their margins): cached
    rows with margin >= evict_threshold (all cached rows when it is None), and candidate
    rows not kept that score above hard_threshold. Rows come out sorted.
    """
    weights = np.stack([s.weights for s in states], axis=1).astype(np.float32)
    biases = np.array([s.bias for s in states], np.float32)
    parts = [([], [], [], []) for _ in states]
    for start in range(0, len(features), chunk_rows):
        stop = min(start + chunk_rows, len(features))
        margins = (np.asarray(features[start:stop], np.float32) * scale) @ weights + biases
        candidate = np.asarray(overlaps[start:stop], np.float32)[:, classes] < neg_iou
        rows = np.arange(start, stop)
        for j, state in enumerate(states):
            m = margins[:, j]
            lo, hi = np.searchsorted(state.cache, [start, stop])
            kept = np.zeros(stop - start, bool)
            kept[state.cache[lo:hi] - start] = True
            if evict_threshold is not None:
                kept &= m >= evict_threshold
            hard = candidate[:, j] & ~kept & (m > hard_threshold)
            for part, mask in zip((0, 2), (kept, hard)):
                parts[j][part].append(rows[mask])
                parts[j][part + 1].append(m[mask])
    return [tuple(np.concatenate(p) if p else np.zeros(0) for p in class_parts) for class_parts in parts]


def _next_round(state, index, kept, kept_margins, hard, hard_margins, features, scale, max_negatives,
                chunk_rows, fit_kwargs, seconds):
    """Round `index` of one class from its pass results (see train_svm for the rules)."""
    began = time.perf_counter()
    hard = hard.astype(np.int64)
    if len(hard) == 0:
        state.active = False
        return
    before = float(np.maximum(0.0, 1.0 + hard_margins).mean())
    rows = np.concatenate([kept.astype(np.int64), hard])
    margins = np.concatenate([kept_margins, hard_margins])
    order = np.argsort(rows, kind="stable")
    cache, margins = rows[order], margins[order]  # kept and hard are disjoint: the sorted union
    if len(cache) > max_negatives:
        cache = np.sort(cache[np.argsort(-margins, kind="stable")[:max_negatives]])
    state.weights, state.bias = _train_round(state.pos, features, cache, scale, fit_kwargs, state.seed)
    state.cache = cache
    after = _mean_hinge(features, hard, scale, state.weights, state.bias, chunk_rows)
    seconds += time.perf_counter() - began
    state.rounds.append(
        MiningRound(index, hard, len(cache), before, after, seconds, state.weights * scale, state.bias)
    )
