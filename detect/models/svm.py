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
(chunk, D) @ (D, K) product) instead of the store being read once per class. Both run the
one mining loop `_mine` and differ only in how a round finds the kept and hard rows.
"""

import dataclasses
import functools
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
    """Adam on the weighted hinge loss + L2 through model.fit, on any Keras backend."""
    import keras

    keras.utils.set_random_seed(seed)
    l2 = 1.0 / (2.0 * C * len(x))
    steps_per_epoch = -(-len(x) // batch)
    # Small sets get more epochs: Adam needs a few hundred steps whatever the data size.
    epochs = max(int(epochs), -(-_MIN_KERAS_STEPS // steps_per_epoch))
    layer = keras.layers.Dense(1, kernel_regularizer=keras.regularizers.L2(l2))  # + l2 * sum(kernel^2)
    model = keras.Sequential([keras.Input((x.shape[1],)), layer])
    optimizer = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(1e-2, epochs * steps_per_epoch))
    # One compiled call per epoch: per-step Python calls would dominate on small sets.
    model.compile(optimizer=optimizer, loss=keras.losses.Hinge(), steps_per_execution=steps_per_epoch)
    weights = np.where(y > 0, pos_weight, 1.0).astype(np.float32)
    # Hinge with sample weights, mean over the batch: mean(w * max(0, 1 - y * margin)).
    model.fit(x, np.asarray(y, np.float32)[:, None], sample_weight=weights, batch_size=batch, epochs=epochs,
              shuffle=True, verbose=0)
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


def train_svm(positives, features, candidates, *, seed=0, **options):
    """One class's SVM with hard-negative mining: the plain per-class reference that
    train_class_svms must match.

    Each round scores the class's candidate rows by index (features[candidates], in chunks)
    and picks the hard ones among them; train_class_svms instead reads the whole store once
    a round for every class. The rest of the mining is the same code (_mine).

    Args:
      positives: (Np, D) features of the class's ground-truth boxes.
      features: (R, D) feature store (np.memmap) holding the negatives.
      candidates: (C,) int rows of `features` that may serve as negatives (IoU < 0.3
        with every box of the class).
      seed: seed of the random start set and of the solver.
      options: the mining options (scale, rounds, initial_negatives, max_negatives,
        hard_threshold, evict_threshold, chunk_rows) and fit_linear_svm's; see _mine.
    Returns:
      LinearSVM on unscaled features, with one MiningRound per training.
    """
    candidates = np.sort(np.asarray(candidates, np.int64))
    select = functools.partial(_select_rows, features, candidates)
    return _mine([positives], features, lambda k: candidates, [seed], select, **options)[0]


def _select_rows(features, candidates, classes, states, scale, hard_threshold, evict_threshold, chunk_rows):
    """train_svm's round for its one class (states[0]): every candidate row scored by the
    current SVM. Returns [(kept cache rows, their margins, hard rows, their margins)] as
    _mining_pass does: cached rows with margin >= evict_threshold (all cached rows when it
    is None), and candidate rows not kept that score above hard_threshold."""
    state = states[0]
    margins = _score_candidates(features, candidates, state.weights, state.bias, scale, chunk_rows)
    # The cache only ever holds candidate rows: their margins are among those just scored.
    kept, kept_margins = state.cache, margins[np.searchsorted(candidates, state.cache)]
    if evict_threshold is not None:
        keep = kept_margins >= evict_threshold
        kept, kept_margins = kept[keep], kept_margins[keep]
    hard = (margins > hard_threshold) & ~np.isin(candidates, kept)
    return [(kept, kept_margins, candidates[hard], margins[hard])]


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


def train_class_svms(positives, features, overlaps, *, neg_iou=0.3, seeds=None, **options):
    """The SVMs of all K classes with hard-negative mining, one pass over the store a round.

    Gives what `train_svm` gives for each class k with candidates = rows whose
    overlaps[:, k] < neg_iou and seed seeds[k] (up to float rounding of the margins).

    Args:
      positives: K arrays (Np_k, D), the features of each class's ground-truth boxes.
      features: (R, D) feature store (float16 or float32 np.memmap), read in contiguous
        chunks of `chunk_rows` rows.
      overlaps: (R, K) array-like, the best IoU of each row with a gt box of each class.
      neg_iou: a row is a candidate negative of class k when overlaps[row, k] < neg_iou.
      seeds: K seeds (default 0..K-1).
      options: the mining options (scale, rounds, initial_negatives, max_negatives,
        hard_threshold, evict_threshold, chunk_rows) and fit_linear_svm's; see _mine.
    Returns:
      K LinearSVMs (unscaled features), each with its MiningRounds.
    RAM: while scoring, one chunk (chunk_rows x D float32) and its (chunk_rows, K)
    margins; while training, one class's (Np + cache) x D float32 rows (and the solver's
    copy); otherwise only row indices.
    """
    seeds = list(range(len(positives))) if seeds is None else [int(s) for s in seeds]

    def candidates_of(k):
        # Made for class k's start set only: K such (R,) arrays at once might not fit.
        return np.flatnonzero(np.asarray(overlaps[:, k], np.float32) < neg_iou)

    select = functools.partial(_mining_pass, features, overlaps, neg_iou)
    return _mine(positives, features, candidates_of, seeds, select, **options)


def _mine(positives, features, candidates_of, seeds, select, *, scale=1.0, rounds=2, initial_negatives=5000,
          max_negatives=100000, hard_threshold=-1.0, evict_threshold=-1.2, chunk_rows=16384, **fit_kwargs):
    """Hard-negative mining of K classes: the one loop of train_svm and train_class_svms.

    Args:
      positives: K arrays (Np_k, D), the features of each class's ground-truth boxes.
      features: (R, D) feature store holding the negatives.
      candidates_of: k -> sorted int rows of `features` that may serve as class k's negatives.
      seeds: K seeds, of each class's random start set and solver.
      select: once a round, (active classes, their states, scale, hard_threshold,
        evict_threshold or None, chunk_rows) -> per active class (kept cache rows, their
        margins, hard rows, their margins) under its current SVM (see _mining_pass).
      scale: features (positives too) are multiplied by it before training.
      rounds: mining rounds after the initial training (0 = random negatives only).
      initial_negatives: size of the random start.
      max_negatives: cache limit; beyond it the highest-scoring negatives are kept.
      hard_threshold: candidates not cached scoring above it join the cache.
      evict_threshold: cached negatives the newest SVM scores below it leave the cache
        (checked when the next round scores them; the start set is kept for round 1).
      chunk_rows: rows scored at a time.
      fit_kwargs: passed to fit_linear_svm (solver, C, pos_weight, bias_scale, epochs).
    Returns:
      K LinearSVMs on unscaled features, each with one MiningRound per training.
    """
    states = []
    for k in range(len(positives)):
        # Class k's candidate rows are freed once its start set is drawn, before any training.
        cache = _start_set(candidates_of(k), initial_negatives, seeds[k])
        states.append(_start_class(positives[k], features, cache, scale, seeds[k], chunk_rows, fit_kwargs))
    for index in range(1, int(rounds) + 1):
        active = [k for k, state in enumerate(states) if state.active]
        if not active:
            break
        began = time.perf_counter()
        evict = evict_threshold if index > 1 else None  # round 0's start set is not evicted
        found = select(active, [states[k] for k in active], scale, hard_threshold, evict, chunk_rows)
        share = (time.perf_counter() - began) / len(active)
        for k, (kept, kept_margins, hard, hard_margins) in zip(active, found):
            _next_round(states[k], index, kept, kept_margins, hard, hard_margins, features, scale,
                        max_negatives, chunk_rows, fit_kwargs, share)
    return [LinearSVM(state.weights * scale, state.bias, state.rounds) for state in states]


def _start_set(candidates, size, seed):
    """Round 0's negatives: `size` random rows of the candidates (all when fewer), sorted."""
    start = min(int(size), len(candidates))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(candidates, size=start, replace=False)) if start else np.zeros(0, np.int64)


def _start_class(positives, features, cache, scale, seed, chunk_rows, fit_kwargs):
    """Round 0 of one class: the first SVM, trained on the start set `cache`."""
    began = time.perf_counter()
    pos = np.asarray(positives, np.float32) * scale
    weights, bias = _train_round(pos, features, cache, scale, fit_kwargs, seed)
    first = _mean_hinge(features, cache, scale, weights, bias, chunk_rows)
    history = [MiningRound(0, cache.copy(), len(cache), None, first, time.perf_counter() - began, weights * scale, bias)]
    return _ClassMining(pos, cache, weights, bias, seed, history)


def _mining_pass(features, overlaps, neg_iou, classes, states, scale, hard_threshold, evict_threshold, chunk_rows):
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
    """Round `index` of one class from its `select` results (see _mine for the rules)."""
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
