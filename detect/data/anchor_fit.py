"""RPN anchors fitted to a dataset's boxes (`detect data anchors`).

YOLOv2's dimension clusters (Redmon and Farhadi 2017, section 2): k-means on box shapes
(width, height) with the distance d = 1 - IoU(box, centroid), both boxes sharing a centre,
so large boxes do not dominate as they would under a Euclidean distance. Two forms:

    grid: anchors are the detector's sizes x ratios grid (what `rpn.anchor_sizes` and
        `rpn.anchor_ratios` express; anchor (s, r) has width s / sqrt(r), height
        s * sqrt(r), as detect.ops.anchors.cell_anchors builds them). The S sizes and R
        ratios are fitted by alternating assignment (each box to its best anchor) and
        update (size i = median sqrt(w h) of the boxes of anchors (i, .), ratio j = median
        h / w of the boxes of anchors (., j)), then polished by a coordinate search on
        the k-means objective; several starts, the best mean IoU wins.
    free: per FPN level (boxes split by their nearest anchor size), len(ratios) free
        shapes by plain k-means with 1 - IoU. The single-level RPN of this toolkit takes
        a grid only, so free shapes are reported, not pasted.

Shapes are measured after the config's resizing (shorter side to input.min_size, longer
side at most input.max_size), as the training pipeline resizes them (the canvases are
sized to fit that rule, so they do not shrink an image further). Quality
of an anchor set: the fraction of boxes whose best anchor has IoU >= 0.5 and >= 0.7
(best-anchor recall) and the mean best IoU, all with shared centres.

Shapes: N boxes, A anchors; `shapes` are (N, 2) float64 [width, height] in pixels.
"""

import numpy as np

from detect.errors import DetectError

THRESHOLDS = (0.5, 0.7)


def resized_shapes(dataset, min_size, max_size):
    """(N, 2) [width, height] of every non-crowd box after the pipeline's resize.

    The resize rule of detect.data.transforms.resize in NumPy: scale = min(min_size /
    short side, max_size / long side); the image becomes round(H * scale) x
    round(W * scale) (at least 1 pixel) and boxes scale by new / old per axis.
    """
    shapes = []
    for record in dataset.records:
        boxes = record.boxes[~record.iscrowd].astype(np.float64)
        if not len(boxes):
            continue
        height, width = float(record.height), float(record.width)
        scale = min(min_size / min(height, width), max_size / max(height, width))
        new_h, new_w = max(round(height * scale), 1), max(round(width * scale), 1)
        sizes = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)
        shapes.append(sizes * [new_w / width, new_h / height])
    return np.concatenate(shapes) if shapes else np.zeros((0, 2))


def anchor_shapes(sizes, ratios):
    """(S * R, 2) [width, height] of the sizes x ratios grid, sizes-major (as cell_anchors)."""
    sizes = np.asarray(sizes, np.float64).reshape(-1, 1)
    sqrt_ratios = np.sqrt(np.asarray(ratios, np.float64)).reshape(1, -1)
    return np.stack([(sizes / sqrt_ratios).ravel(), (sizes * sqrt_ratios).ravel()], axis=1)


def shape_iou(shapes, anchors):
    """(N, A) IoU of boxes and anchors placed on a common centre.

    The intersection of two centred boxes is min(w1, w2) * min(h1, h2).
    """
    shapes = np.asarray(shapes, np.float64).reshape(-1, 1, 2)
    anchors = np.asarray(anchors, np.float64).reshape(1, -1, 2)
    inter = np.prod(np.minimum(shapes, anchors), axis=-1)
    union = np.prod(shapes, axis=-1) + np.prod(anchors, axis=-1) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def anchor_quality(shapes, anchors):
    """{"recall@0.5", "recall@0.7", "mean_iou"} of an anchor set (A, 2) on shapes (N, 2)."""
    if not len(shapes):
        return {**{f"recall@{t}": 0.0 for t in THRESHOLDS}, "mean_iou": 0.0}
    best = shape_iou(shapes, anchors).max(axis=1)
    quality = {f"recall@{t}": float(np.mean(best >= t)) for t in THRESHOLDS}
    quality["mean_iou"] = float(best.mean())
    return quality


def _mean_best_iou(shapes, sizes, ratios):
    return float(shape_iou(shapes, anchor_shapes(sizes, ratios)).max(axis=1).mean())


def _grid_kmeans(shapes, sizes, ratios, iterations):
    """Alternating assignment / median update of a sizes x ratios grid."""
    sizes, ratios = np.array(sizes, np.float64), np.array(ratios, np.float64)
    box_sizes = np.sqrt(shapes[:, 0] * shapes[:, 1])
    box_ratios = shapes[:, 1] / shapes[:, 0]
    previous = None
    for _ in range(iterations):
        best = shape_iou(shapes, anchor_shapes(sizes, ratios)).argmax(axis=1)
        if previous is not None and np.array_equal(best, previous):
            break
        previous = best
        size_of, ratio_of = np.divmod(best, len(ratios))
        for i in range(len(sizes)):
            if np.any(size_of == i):
                sizes[i] = np.median(box_sizes[size_of == i])
        for j in range(len(ratios)):
            if np.any(ratio_of == j):
                ratios[j] = np.exp(np.median(np.log(box_ratios[ratio_of == j])))
    return sizes, ratios


def _polish(shapes, sizes, ratios, steps=(1.25, 1.1, 1.03), max_rounds=20):
    """Coordinate search: scale one size or ratio at a time while the mean IoU rises."""
    sizes, ratios = np.array(sizes), np.array(ratios)
    score = _mean_best_iou(shapes, sizes, ratios)
    for step in steps:
        improved, rounds = True, 0
        while improved and rounds < max_rounds:
            improved, rounds = False, rounds + 1
            for values in (sizes, ratios):
                for i in range(len(values)):
                    for factor in (step, 1 / step):
                        old = values[i]
                        values[i] = old * factor
                        trial = _mean_best_iou(shapes, sizes, ratios)
                        if trial > score + 1e-9:
                            score, improved = trial, True
                        else:
                            values[i] = old
    return sizes, ratios, score


def fit_grid(shapes, num_sizes, num_ratios, initial=None, restarts=4, iterations=50, seed=0):
    """Fit S sizes and R ratios to shapes (N, 2) by k-means with 1 - IoU on the grid.

    Args:
        shapes: (N, 2) [width, height] in pixels, N >= 1.
        num_sizes, num_ratios: S and R.
        initial: optional (sizes, ratios) start (e.g. the config's anchors).
        restarts: random starts besides the quantile start and `initial`.

    Returns:
        (sizes ascending (S,), ratios ascending (R,)) with the best mean best IoU.
    """
    shapes = np.asarray(shapes, np.float64)
    rng = np.random.default_rng(seed)
    log_size = 0.5 * np.log(shapes[:, 0] * shapes[:, 1])
    log_ratio = np.log(shapes[:, 1] / shapes[:, 0])
    qs, qr = (np.arange(num_sizes) + 0.5) / num_sizes, (np.arange(num_ratios) + 0.5) / num_ratios
    starts = [(np.exp(np.quantile(log_size, qs)), np.exp(np.quantile(log_ratio, qr)))]
    if initial is not None:
        starts.append(tuple(np.asarray(v, np.float64) for v in initial))
    for _ in range(restarts):
        starts.append((np.exp(np.sort(rng.choice(log_size, num_sizes))),
                       np.exp(np.sort(rng.choice(log_ratio, num_ratios)))))
    best = None
    for sizes, ratios in starts:
        sizes, ratios = _grid_kmeans(shapes, sizes, ratios, iterations)
        sizes, ratios, score = _polish(shapes, sizes, ratios)
        if best is None or score > best[2]:
            best = (np.sort(sizes), np.sort(ratios), score)
    return best[0], best[1]


def fit_free(shapes, k, iterations=100, seed=0):
    """YOLOv2 k-means: k free shapes (k, 2) [width, height] with 1 - IoU, medians as centroids."""
    shapes = np.asarray(shapes, np.float64)
    k = min(k, len(np.unique(shapes, axis=0)))
    rng = np.random.default_rng(seed)
    centroids = shapes[rng.choice(len(shapes), k, replace=False)]
    previous = None
    for _ in range(iterations):
        best = shape_iou(shapes, centroids).argmax(axis=1)
        if previous is not None and np.array_equal(best, previous):
            break
        previous = best
        for c in range(k):
            if np.any(best == c):
                centroids[c] = np.median(shapes[best == c], axis=0)
    return centroids[np.argsort(centroids[:, 0] * centroids[:, 1])]


def fit_free_levels(shapes, sizes, num_ratios, seed=0):
    """Per level (one a configured size, FPN style): num_ratios free shapes fitted to the
    boxes whose sqrt area is nearest that size in log scale. Returns [(k, 2) array] per
    level (empty when no box falls in the level)."""
    log_sizes = np.log(np.asarray(sizes, np.float64))
    box_level = np.abs(0.5 * np.log(shapes[:, 0] * shapes[:, 1])[:, None] - log_sizes[None]).argmin(axis=1)
    return [fit_free(shapes[box_level == i], num_ratios, seed=seed) if np.any(box_level == i)
            else np.zeros((0, 2)) for i in range(len(sizes))]


def fit_anchors(dataset, sizes, ratios, min_size, max_size, mode="grid",
                max_fit_boxes=20000, seed=0):
    """Fit anchors to dataset and compare them with (sizes, ratios).

    Args:
        dataset: a Dataset (crowd boxes are left out).
        sizes, ratios: the config's anchors (rpn.anchor_sizes / rpn.anchor_ratios).
        min_size, max_size: the config's input resizing (input.min_size, input.max_size).
        mode: "grid" or "free" (free also reports per-level free shapes).
        max_fit_boxes: k-means runs on a random subset this large; quality uses every box.

    Returns:
        dict: boxes, mode, anchor_sizes, anchor_ratios (fitted grid, sizes rounded to 0.1
        px, ratios to 0.001), default {anchor_sizes, anchor_ratios}, recall {default,
        fitted[, free]} (each recall@0.5, recall@0.7, mean_iou, measured with the rounded
        values), and for mode free anchor_shapes [[[w, h], ...] per level].
    """
    if mode not in ("grid", "free"):
        raise DetectError(f"anchor fit mode {mode!r}: expected grid or free")
    shapes = resized_shapes(dataset, min_size, max_size)
    if not len(shapes):
        raise DetectError(f"{dataset.source}: no boxes to fit anchors to")
    rng = np.random.default_rng(seed)
    sample = shapes if len(shapes) <= max_fit_boxes else shapes[rng.choice(len(shapes), max_fit_boxes, replace=False)]
    fitted_sizes, fitted_ratios = fit_grid(sample, len(sizes), len(ratios), initial=(sizes, ratios), seed=seed)
    fitted_sizes = [round(float(v), 1) for v in fitted_sizes]
    fitted_ratios = [round(float(v), 3) for v in fitted_ratios]
    result = {
        "boxes": int(len(shapes)),
        "mode": mode,
        "anchor_sizes": fitted_sizes,
        "anchor_ratios": fitted_ratios,
        "default": {"anchor_sizes": [float(v) for v in sizes], "anchor_ratios": [float(v) for v in ratios]},
        "recall": {
            "default": anchor_quality(shapes, anchor_shapes(sizes, ratios)),
            "fitted": anchor_quality(shapes, anchor_shapes(fitted_sizes, fitted_ratios)),
        },
    }
    if mode == "free":
        levels = fit_free_levels(sample, sizes, len(ratios), seed=seed)
        result["anchor_shapes"] = [np.round(level, 1).tolist() for level in levels]
        result["recall"]["free"] = anchor_quality(shapes, np.concatenate(levels))
    return result, shapes


def format_report(result):
    """A table of best-anchor recall and mean IoU, then the YAML lines to paste."""
    rows = [f"{result['boxes']} boxes after resizing; best-anchor recall (shared centres):",
            f"  {'anchors':<8} {'recall@0.5':>10} {'recall@0.7':>10} {'mean IoU':>9}"]
    for name, quality in result["recall"].items():
        rows.append(f"  {name:<8} {quality['recall@0.5']:>10.3f} {quality['recall@0.7']:>10.3f} "
                    f"{quality['mean_iou']:>9.3f}")
    if "anchor_shapes" in result:
        rows.append("free shapes per level (w x h), not expressible as rpn.anchor_sizes x anchor_ratios:")
        rows += [f"  level {i}: " + ", ".join(f"{w:g}x{h:g}" for w, h in level)
                 for i, level in enumerate(result["anchor_shapes"])]
    rows += ["paste into the config:", "rpn:",
             f"  anchor_sizes: [{', '.join(f'{v:g}' for v in result['anchor_sizes'])}]",
             f"  anchor_ratios: [{', '.join(f'{v:g}' for v in result['anchor_ratios'])}]"]
    return "\n".join(rows)


def plot_anchors(shapes, result, path, max_points=5000, seed=0):
    """Save a log-log scatter of box shapes with the default and fitted anchors (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from detect.io import atomic_path

    rng = np.random.default_rng(seed)
    points = shapes if len(shapes) <= max_points else shapes[rng.choice(len(shapes), max_points, replace=False)]
    default = anchor_shapes(result["default"]["anchor_sizes"], result["default"]["anchor_ratios"])
    fitted = anchor_shapes(result["anchor_sizes"], result["anchor_ratios"])
    recall = result["recall"]
    figure, axes = plt.subplots(figsize=(6, 6))
    axes.scatter(points[:, 0], points[:, 1], s=4, alpha=0.3, color="0.4", label=f"boxes ({len(shapes)})")
    axes.scatter(default[:, 0], default[:, 1], s=80, marker="x", color="tab:red",
                 label=f"default (recall@0.5 {recall['default']['recall@0.5']:.2f})")
    axes.scatter(fitted[:, 0], fitted[:, 1], s=80, marker="o", facecolors="none", color="tab:green",
                 label=f"fitted (recall@0.5 {recall['fitted']['recall@0.5']:.2f})")
    if "anchor_shapes" in result:
        free = np.concatenate([np.reshape(level, (-1, 2)) for level in result["anchor_shapes"]])
        axes.scatter(free[:, 0], free[:, 1], s=60, marker="^", facecolors="none", color="tab:blue",
                     label=f"free (recall@0.5 {recall['free']['recall@0.5']:.2f})")
    axes.set(xscale="log", yscale="log", xlabel="width after resizing (px)", ylabel="height after resizing (px)",
             title="box shapes and RPN anchors")
    axes.legend(loc="upper left", fontsize=8)
    axes.grid(True, which="both", alpha=0.3)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=100, bbox_inches="tight", format="png")
    plt.close(figure)
