"""R-CNN training (`detector: rcnn`), the paper's pipeline in five timed phases:

1. finetune    the CNN as a (K + 1)-way classifier on warped regions (IoU >= rcnn.fg_iou
               is its gt's class, below is background; rcnn.fg_per_batch /
               rcnn.bg_per_batch per batch), through Keras fit with the usual callbacks;
               its checkpoints and history go to `finetune/`.
2. features    features of every ground-truth box and proposal of the training split,
               appended to raw float16 files in the feature cache (half of float32's disk:
               VOC07 trainval's ~10M regions x 4096 fc7 values take 82 GB, not 164 GB)
               and read back as np.memmap (FeatureStore), so the split may be larger than
               RAM; the per-region metadata is streamed to disk and memory-mapped too.
3. svms        one linear SVM per class with hard-negative mining (detect.models.svm),
               every class mined in one read of the store per round.
4. regressors  one ridge regressor per class (lambda rcnn.ridge_lambda) from pool5-level
               features of proposals with IoU >= rcnn.reg_iou to BoxCoder deltas
               (weights 1, 1, 1, 1), targets standardized per coordinate (as in the R-CNN
               code) with the standardization folded back into the layer weights.
5. save        SVMs and regressors become the model's `svm` / `box_regressor` Dense layers;
               model.keras is written atomically.

`rcnn_state.json` records finished phases 1-2, so a rerun after a crash reuses the
fine-tuned weights and a complete feature cache. Phase times go to `rcnn_phases.json`.
"""

import json
import os
import shutil
import time

import keras
import numpy as np
from tqdm import tqdm

from detect.data.splits import pipeline
from detect.io import atomic_path, write_json
from detect.models.registry import build_model
from detect.models.svm import feature_scale, train_class_svms
from detect.ops.boxes import pairwise_iou_np, valid_mask_np
from detect.training.loop import fit_model, steps_per_epoch
from detect.training.optimizers import build_optimizer

STATE_FILE = "rcnn_state.json"
_FEATURES, _REGRESSION, _INDEX = "features.f16", "regression.f16", "store.json"
STORE_DTYPE = np.float16
_FLOAT16_MAX = float(np.finfo(np.float16).max)

# Per-row metadata files: name -> (dtype, trailing shape; "K" = number of classes).
_META_LAYOUT = {
    "boxes": ("float32", (4,)),
    "gt_label": ("int16", ()),
    "class_iou": ("float16", ("K",)),
    "best_iou": ("float32", ()),
    "best_class": ("int16", ()),
    "best_box": ("float32", (4,)),
    "image": ("int64", ()),
}


class FeatureStore:
    """Cached region features of a split (R rows: each image's gt boxes, then its proposals).

    Files in `folder`, all raw arrays read back as read-only np.memmap: features.f16
    (R, D) float16; regression.f16 (Rr, F) float16 for the regression rows when the
    regressors read other features than the SVMs (VGG16 pool5); meta_<key>.bin per row:
    boxes (R, 4) xyxy canvas pixels, gt_label (R,) (class of a gt row, 0 for proposals),
    class_iou (R, K) float16 best IoU with a gt box of each class, best_iou / best_class /
    best_box of the gt box of highest IoU, image (R,) image id; reg_rows.bin (Rr,) int64
    rows with best_iou >= the regression threshold. store.json, written last, holds the
    sizes and marks the cache complete. Rows are read as float16: convert chunks
    (np.asarray(rows, np.float32)), never the whole store.
    """

    def __init__(self, folder):
        self.folder = folder
        with open(os.path.join(folder, _INDEX), encoding="utf-8") as f:
            index = json.load(f)
        rows, classes = int(index["rows"]), int(index["num_classes"])
        dims = [int(d) for d in index["dims"]]
        self.meta = {"dims": np.array(dims)}
        for key, (dtype, tail) in _META_LAYOUT.items():
            shape = (rows,) + tuple(classes if d == "K" else d for d in tail)
            self.meta[key] = self._open(f"meta_{key}.bin", dtype, shape)
        self.meta["reg_rows"] = self._open("reg_rows.bin", "int64", (int(index["regression_rows"]),))
        self.features = self._open(_FEATURES, STORE_DTYPE, (rows, dims[0]))
        self.regression = None
        if index["separate_regression"]:
            self.regression = self._open(_REGRESSION, STORE_DTYPE, (int(index["regression_rows"]), dims[1]))

    def _open(self, name, dtype, shape):
        if 0 in shape:
            return np.zeros(shape, dtype)
        return np.memmap(os.path.join(self.folder, name), dtype=dtype, mode="r", shape=shape)

    @staticmethod
    def complete(folder):
        return os.path.isfile(os.path.join(folder, _INDEX))

    def regression_features(self, positions):
        """(len(positions), F) float32 regression features of reg_rows[positions]."""
        positions = np.asarray(positions, np.int64)
        if self.regression is not None:
            return np.asarray(self.regression[positions], np.float32)
        return np.asarray(self.features[self.meta["reg_rows"][positions]], np.float32)


def to_store_dtype(values):
    """float32 features -> the store's float16, clipped to float16's finite range."""
    return np.clip(np.asarray(values, np.float32), -_FLOAT16_MAX, _FLOAT16_MAX).astype(STORE_DTYPE)


def _image_rows(gt_boxes, gt_labels, proposals, num_classes):
    """Boxes of one image (gt first, then valid proposals) and their overlap metadata."""
    keep = gt_labels > 0
    gt, labels = gt_boxes[keep], gt_labels[keep]
    valid = valid_mask_np(proposals)
    boxes = np.concatenate([gt, proposals[valid]]).astype(np.float32)
    gt_label = np.concatenate([labels, np.zeros(int(valid.sum()), np.int32)]).astype(np.int16)
    iou = pairwise_iou_np(boxes, gt).astype(np.float32) if len(gt) else np.zeros((len(boxes), 0), np.float32)
    class_iou = np.zeros((len(boxes), num_classes), np.float32)
    for k in range(1, num_classes + 1):
        if (labels == k).any():
            class_iou[:, k - 1] = iou[:, labels == k].max(axis=1)
    best = iou.argmax(axis=1) if len(gt) else np.zeros(len(boxes), np.int64)
    best_iou = iou.max(axis=1) if len(gt) else np.zeros(len(boxes), np.float32)
    best_class = labels[best] if len(gt) else np.zeros(len(boxes), np.int32)
    best_box = gt[best] if len(gt) else np.zeros((len(boxes), 4), np.float32)
    return {
        "boxes": boxes,
        "gt_label": gt_label,
        "class_iou": class_iou.astype(np.float16),
        "best_iou": best_iou.astype(np.float32),
        "best_class": best_class.astype(np.int16),
        "best_box": best_box.astype(np.float32),
    }


def extract_features(model, tf_dataset, folder, reg_iou, total=None, progress=True):
    """Run the CNN over every gt box and proposal of a pipeline into a FeatureStore.

    tf_dataset: batches with images, gt_boxes, gt_labels, proposals (canvas pixels), not
    shuffled or flipped. Features and metadata are appended to files batch by batch, so
    RAM does not grow with the split. Returns the FeatureStore.
    """

    from detect.inference.predict_function import traced

    @traced
    def run(images, boxes, box_indices):
        return model.chunked_region_features(images, boxes, box_indices)

    if os.path.isdir(folder):
        shutil.rmtree(folder)
    os.makedirs(folder)
    separate = model.pool5 is not None
    names = {"features": _FEATURES, "regression": _REGRESSION, "reg_rows": "reg_rows.bin"}
    names.update({key: f"meta_{key}.bin" for key in _META_LAYOUT})
    files = {key: open(os.path.join(folder, name), "wb") for key, name in names.items()}
    rows_written = reg_written = 0
    bar = tqdm(total=total, unit="img", desc="R-CNN features", disable=not progress)
    try:
        for batch in tf_dataset:
            arrays = {k: np.asarray(batch[k]) for k in ("gt_boxes", "gt_labels", "proposals", "image_id")}
            rows = [
                _image_rows(arrays["gt_boxes"][i], arrays["gt_labels"][i], arrays["proposals"][i], model.num_classes)
                for i in range(len(arrays["image_id"]))
            ]
            counts = [len(r["boxes"]) for r in rows]
            meta = {key: np.concatenate([r[key] for r in rows]) for key in rows[0]}
            meta["image"] = np.repeat(arrays["image_id"].astype(np.int64), counts)
            indices = np.repeat(np.arange(len(rows), dtype=np.int32), counts)
            tensor = keras.ops.convert_to_tensor
            features, regression = run(tensor(np.asarray(batch["images"])), tensor(meta["boxes"]), tensor(indices))
            features, regression = keras.ops.convert_to_numpy(features), keras.ops.convert_to_numpy(regression)
            to_store_dtype(features).tofile(files["features"])
            reg_mask = meta["best_iou"] >= reg_iou
            (np.flatnonzero(reg_mask).astype(np.int64) + rows_written).tofile(files["reg_rows"])
            if separate:
                to_store_dtype(regression[reg_mask]).tofile(files["regression"])
            for key, (dtype, _) in _META_LAYOUT.items():
                meta[key].astype(dtype).tofile(files[key])
            rows_written += len(indices)
            reg_written += int(reg_mask.sum())
            bar.update(len(rows))
    finally:
        for f in files.values():
            f.close()
        bar.close()
    if not separate:
        os.remove(os.path.join(folder, _REGRESSION))
    write_json(os.path.join(folder, _INDEX), {
        "rows": rows_written, "regression_rows": reg_written, "num_classes": model.num_classes,
        "dims": [int(model.feature_dim), int(model.regression_dim)], "separate_regression": separate,
        "dtype": np.dtype(STORE_DTYPE).name,
    })
    return FeatureStore(folder)


def train_svms(store, num_classes, r, seed=0, log=print):
    """Per-class SVMs on a FeatureStore under the config's `rcnn` section `r`, every class
    mined in one pass over the store per round (detect.models.svm.train_class_svms).

    Returns kernel (D, K), bias (K,) on raw features and per-class mining summaries.
    """
    features, meta = store.features, store.meta
    scale = feature_scale(features, r["feature_norm"], seed=seed)
    gt_label = np.asarray(meta["gt_label"])
    positives = [np.asarray(features[np.flatnonzero(gt_label == k)], np.float32) for k in range(1, num_classes + 1)]
    svms = train_class_svms(
        positives, features, meta["class_iou"], neg_iou=r["neg_iou"], scale=scale,
        rounds=r["hard_negative_rounds"], initial_negatives=r["initial_negatives"],
        max_negatives=r["max_negatives"], hard_threshold=r["hard_threshold"],
        evict_threshold=r["evict_threshold"], seeds=[seed + k for k in range(1, num_classes + 1)],
        solver=r["svm_solver"], C=r["svm_c"], pos_weight=r["svm_pos_weight"], bias_scale=r["svm_bias_scale"],
        epochs=r["svm_epochs"],
    )
    kernel = np.zeros((features.shape[1], num_classes), np.float32)
    bias = np.zeros(num_classes, np.float32)
    summary = {}
    for k, svm in enumerate(svms, start=1):
        kernel[:, k - 1], bias[k - 1] = svm.weights, svm.bias
        summary[str(k)] = [
            {"round": m.index, "added": int(len(m.added)), "training_negatives": m.training_negatives,
             "hinge_before": m.hinge_before, "hinge_after": m.hinge_after, "seconds": round(m.seconds, 2)}
            for m in svm.rounds
        ]
        added = ", ".join(f"{m.index}:{len(m.added)}" for m in svm.rounds)
        log(f"  svm class {k}: {len(positives[k - 1])} positives, negatives added per round {added}")
    return kernel, bias, summary


def fit_box_regressors(store, num_classes, coder, r, seed=0):
    """Per-class ridge regressors -> kernel (F, 4K), bias (4K,) giving BoxCoder deltas."""
    from sklearn.linear_model import Ridge

    meta = store.meta
    reg_rows = meta["reg_rows"]
    dim = int(meta["dims"][1])
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(reg_rows), size=min(len(reg_rows), 10000), replace=False))
    scale = feature_scale(store.regression_features(sample), r["feature_norm"], seed=seed) if len(sample) else 1.0
    kernel = np.zeros((dim, 4 * num_classes), np.float32)
    bias = np.zeros(4 * num_classes, np.float32)
    for k in range(1, num_classes + 1):
        positions = np.flatnonzero(meta["best_class"][reg_rows] == k)
        if len(positions) > r["ridge_max_samples"]:
            positions = np.sort(rng.choice(positions, size=int(r["ridge_max_samples"]), replace=False))
        if len(positions) < 2:
            continue
        rows = reg_rows[positions]
        targets = keras.ops.convert_to_numpy(coder.encode(meta["best_box"][rows], meta["boxes"][rows]))
        mean, std = targets.mean(axis=0), targets.std(axis=0) + 1e-6
        ridge = Ridge(alpha=r["ridge_lambda"]).fit(store.regression_features(positions) * scale, (targets - mean) / std)
        kernel[:, 4 * (k - 1) : 4 * k] = ridge.coef_.T * std * scale
        bias[4 * (k - 1) : 4 * k] = ridge.intercept_ * std + mean
    return kernel, bias


def _finetune(model, config, out_dir, train_set, val_set, skipped, epochs, meter=None):
    t = {**config["training"], "epochs": epochs}
    config = {**config, "training": t}
    train_ds = pipeline(config, train_set, training=True, skipped=skipped)
    val = (pipeline(config, val_set, training=False), val_set) if val_set is not None else None
    model.scoring = "softmax"
    model.compile(optimizer=build_optimizer(t), jit_compile=False)
    folder = os.path.join(out_dir, "finetune")
    os.makedirs(folder, exist_ok=True)
    fit_model(model, config, folder, train_ds, val, steps_per_epoch(config, train_set), skipped, epochs=epochs,
              meter=meter)
    history = os.path.join(folder, "history.csv")
    if os.path.isfile(history):
        shutil.copyfile(history, os.path.join(out_dir, "history.csv"))


def _save_state(path, state):
    write_json(path, state)


def cache_folder(config, out_dir):
    """The feature cache of a run: MODEL_DIR/feature_cache, or a folder named after the
    run inside rcnn.cache_dir."""
    if config["rcnn"]["cache_dir"]:
        return os.path.join(config["rcnn"]["cache_dir"], os.path.basename(os.path.abspath(out_dir)) + "_rcnn_features")
    return os.path.join(out_dir, "feature_cache")


def _features(model, config, train_set, skipped, cache, state, state_path):
    """The FeatureStore of the training split: reused when complete, else extracted."""

    if "features" in state["done"] and FeatureStore.complete(cache):
        return FeatureStore(cache)
    ordered = pipeline(config, train_set, training=False, skipped=skipped, split="train")
    store = extract_features(model, ordered, cache, config["rcnn"]["reg_iou"], total=len(train_set),
                             progress=os.environ.get("DETECT_QUIET") != "1")
    state["done"] = [p for p in state["done"] if p != "features"] + ["features"]
    _save_state(state_path, state)
    return store


def train_rcnn(config, out_dir, train_set, val_set, skipped, strategy, meter=None):
    """Run (or resume) the five phases; returns the path of the final model.keras."""
    r = config["rcnn"]
    state_path = os.path.join(out_dir, STATE_FILE)
    state = {"done": []}
    if os.path.isfile(state_path):
        with open(state_path, encoding="utf-8") as f:
            state = json.load(f)
    # Written before any work, so `--resume` finds the run even if fine-tuning is killed.
    _save_state(state_path, state)
    phases = {}
    if config["model"]["init"]:
        raise DetectError("model.init: R-CNN trains its CNN, SVMs and regressors from its own stages; "
                          "model.init applies to fast_rcnn and faster_rcnn")
    with strategy.scope():
        model = build_model(config, train_set.classes)

    start = time.monotonic()
    weights = os.path.join(out_dir, "finetune.weights.h5")
    epochs = config["training"]["epochs"] if r["finetune_epochs"] is None else int(r["finetune_epochs"])
    if "finetune" in state["done"]:
        model.load_weights(weights)
    elif epochs > 0:
        _finetune(model, config, out_dir, train_set, val_set, skipped, epochs, meter)
        model.save_weights(weights)
        state["done"].append("finetune")
        _save_state(state_path, state)
    phases["finetune"] = _phase_done("finetune", start)

    start = time.monotonic()
    cache = cache_folder(config, out_dir)
    store = _features(model, config, train_set, skipped, cache, state, state_path)
    phases["features"] = _phase_done("features", start, f"{len(store.features)} regions")

    start = time.monotonic()
    kernel, bias, mining = train_svms(store, model.num_classes, r, seed=int(config["seed"]))
    model.set_svms(kernel, bias)
    phases["svms"] = _phase_done("svms", start, f"solver {r['svm_solver']}")

    start = time.monotonic()
    kernel, bias = fit_box_regressors(store, model.num_classes, model.coder, r, seed=int(config["seed"]))
    model.set_box_regressors(kernel, bias)
    phases["regressors"] = _phase_done("regressors", start, f"{len(store.meta['reg_rows'])} regions")

    start = time.monotonic()
    model.scoring = "svm"
    final = os.path.join(out_dir, "model.keras")
    with atomic_path(final) as tmp:
        model.save(tmp)
    phases["save"] = _phase_done("save", start)
    if not r["keep_cache"]:
        shutil.rmtree(cache, ignore_errors=True)
    write_json(os.path.join(out_dir, "rcnn_phases.json"), {"seconds": phases, "hard_negative_mining": mining})
    return final


def _phase_done(name, start, note=""):
    seconds = time.monotonic() - start
    print(f"R-CNN phase {name}: {seconds:.1f} s" + (f" ({note})" if note else ""), flush=True)
    return round(seconds, 2)
