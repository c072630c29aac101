"""Evaluation plots: per-class precision/recall curves and a confusion matrix.

Figures are drawn with `matplotlib.figure.Figure` on the Agg canvas (no pyplot state, no
display) and written atomically (temp file + os.replace). Class order is ascending
category id, as in `coco_eval.category_names`.
"""


import numpy as np
from matplotlib.figure import Figure

from detect.evaluation.coco_eval import check_detections, check_ground_truth
from detect.evaluation.voc_eval import xywh_to_xyxy
from detect.io import atomic_write
from detect.ops.boxes import pairwise_iou_np

# COCOeval's default IoU thresholds are .50:.05:.95; these are the indices of .50 and .75.
_IOU_INDEX = {"0.50": 0, "0.75": 5}


def save_figure(fig, path, dpi=100):
    """Write `fig` as PNG to `path` atomically (detect.io.atomic_write)."""
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi)


def plot_pr_curves(precision, class_names, path):
    """Per-class precision/recall curves at IoU 0.50 and 0.75 (area all, 100 dets/image).

    precision: (T=10, R, K, A, M) COCOeval precision array (recall sampled at
        linspace(0, 1, R)); -1 entries (class without ground truth) are not drawn.
    class_names: K names in the order of the K axis.
    path: PNG file written (two side-by-side axes, one line per class).
    """
    precision = np.asarray(precision)
    if precision.ndim != 5 or precision.shape[0] != 10 or precision.shape[2] != len(class_names):
        raise ValueError(f"precision must be (10, R, {len(class_names)}, A, M), got {precision.shape}")
    recall = np.linspace(0.0, 1.0, precision.shape[1])
    fig = Figure(figsize=(12, 5))
    for col, (label, t) in enumerate(_IOU_INDEX.items()):
        ax = fig.add_subplot(1, 2, col + 1)
        for k, name in enumerate(class_names):
            curve = precision[t, :, k, 0, -1]
            if np.all(curve < 0):
                continue
            ax.plot(recall, curve, linewidth=1.5, label=f"{name} (AP {curve.mean():.3f})")
        ax.set(title=f"IoU = {label}", xlabel="recall", ylabel="precision",
               xlim=(0, 1), ylim=(0, 1.02))
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(loc="best", fontsize="small")
        else:
            ax.text(0.5, 0.5, "no class with ground truth", ha="center", va="center")
    fig.tight_layout()
    save_figure(fig, path)


def _image_confusion(gts, dets, iou_threshold, matrix):
    """Add one image's counts to `matrix` (gts: (labels, xyxy, crowd), dets: (labels, xyxy, scores))."""
    gt_labels, gt_boxes, crowd = gts
    det_labels, det_boxes, scores = dets
    real = np.flatnonzero(~crowd)
    taken = np.zeros(len(real), dtype=bool)
    for d in np.argsort(-scores, kind="stable"):
        ious = pairwise_iou_np(det_boxes[d][None], gt_boxes[real])[0] if real.size else np.zeros(0)
        ious = np.where(taken, -1.0, ious)
        best = int(np.argmax(ious)) if ious.size else -1
        if best >= 0 and ious[best] >= iou_threshold:
            taken[best] = True
            matrix[gt_labels[real[best]], det_labels[d]] += 1
        elif not _inside_crowd(det_boxes[d], gt_boxes[crowd], iou_threshold):
            matrix[0, det_labels[d]] += 1
    for g in real[~taken]:
        matrix[gt_labels[g], 0] += 1


def _inside_crowd(box, crowd_boxes, threshold):
    """True when the share of `box` (4,) xyxy covered by a crowd box reaches `threshold`."""
    if not len(crowd_boxes):
        return False
    wh = np.clip(np.minimum(box[2:], crowd_boxes[:, 2:]) - np.maximum(box[:2], crowd_boxes[:, :2]), 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    return bool(area > 0 and np.max(wh[:, 0] * wh[:, 1]) / area >= threshold)


def confusion_matrix(gt, detections, iou_threshold=0.5, score_threshold=0.5):
    """Detection confusion matrix, (K+1, K+1) int64 counts.

    Index 0 is background, 1..K the classes in ascending category id order. Rows are the
    ground truth, columns the prediction: [g, p] counts gt boxes of class g matched by a
    detection of class p; row 0 holds false positives (detections matching no gt), column
    0 missed gt boxes. Detections with score >= `score_threshold` are matched per image in
    descending score order, class-agnostically, to the free gt box of highest IoU
    (>= `iou_threshold`). Crowd gt boxes are ignore regions: never counted as missed, and
    an unmatched detection lying inside one (intersection / detection area >= the
    threshold) is not a false positive. "difficult" boxes count as ordinary gt.
    """
    check_ground_truth(gt)
    plain = check_detections(gt, detections)
    cat_ids = sorted(c["id"] for c in gt["categories"])
    label_of = {cat_id: k + 1 for k, cat_id in enumerate(cat_ids)}
    matrix = np.zeros((len(cat_ids) + 1,) * 2, dtype=np.int64)
    gt_by_image, det_by_image = {}, {}
    for ann in gt["annotations"]:
        gt_by_image.setdefault(ann["image_id"], []).append(ann)
    for det in plain:
        if det["score"] >= score_threshold:
            det_by_image.setdefault(det["image_id"], []).append(det)
    for image in gt["images"]:
        anns = gt_by_image.get(image["id"], [])
        dets = det_by_image.get(image["id"], [])
        gts = (np.array([label_of[a["category_id"]] for a in anns], dtype=np.int64),
               xywh_to_xyxy([a["bbox"] for a in anns]),
               np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool))
        preds = (np.array([label_of[d["category_id"]] for d in dets], dtype=np.int64),
                 xywh_to_xyxy([d["bbox"] for d in dets]),
                 np.array([d["score"] for d in dets], dtype=np.float64))
        _image_confusion(gts, preds, iou_threshold, matrix)
    return matrix


def plot_confusion_matrix(matrix, class_names, path):
    """Draw a (K+1, K+1) confusion matrix (index 0 = background) with its counts to PNG `path`."""
    matrix = np.asarray(matrix)
    labels = ["background"] + list(class_names)
    if matrix.shape != (len(labels), len(labels)):
        raise ValueError(f"matrix must be ({len(labels)}, {len(labels)}), got {matrix.shape}")
    size = 3 + 0.6 * len(labels)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(matrix, cmap="Blues", vmin=0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks, labels, rotation=45, ha="right")
    ax.set_yticks(ticks, labels)
    ax.set(xlabel="predicted", ylabel="ground truth", title="confusion matrix")
    high = matrix.max() / 2 if matrix.size else 0
    for (row, col), count in np.ndenumerate(matrix):
        ax.text(col, row, str(count), ha="center", va="center",
                color="white" if count > high else "black", fontsize="small")
    fig.tight_layout()
    save_figure(fig, path)


_ERROR_COLORS = {"Cls": "#d62728", "Loc": "#ff7f0e", "Both": "#8c564b", "Dupe": "#9467bd",
                 "Bkg": "#17becf", "Miss": "#7f7f7f", "FalsePos": "#1f77b4", "FalseNeg": "#2ca02c"}


def plot_error_breakdown(errors, path):
    """Bar chart of the TIDE breakdown: main errors (left) and FalsePos / FalseNeg (right).

    errors: the `errors.error_breakdown` dict ("dAP", "FalsePos", "FalseNeg", "counts",
    "AP50"; AP values 0-1). Writes PNG `path`; each bar is labelled with its dAP.
    """
    main = dict(errors["dAP"])
    special = {k: errors[k] for k in ("FalsePos", "FalseNeg")}
    fig = Figure(figsize=(10, 3.6))
    top = max([v or 0.0 for v in (*main.values(), *special.values())] + [0.01]) * 1.25
    for col, (title, values) in enumerate((("main errors (count)", main), ("special errors", special))):
        ax = fig.add_subplot(1, 2, col + 1) if col == 0 else fig.add_subplot(1, 4, 4)
        names = list(values)
        heights = [values[k] or 0.0 for k in names]
        bars = ax.bar(names, heights, color=[_ERROR_COLORS[k] for k in names])
        for bar, name, height in zip(bars, names, heights):
            count = errors["counts"].get(name)
            text = f"{height:.3f}" + (f"\n({count})" if count is not None else "")
            ax.text(bar.get_x() + bar.get_width() / 2, height, text, ha="center", va="bottom",
                    fontsize="small")
        ax.set(title=title, ylabel="dAP50 (0-1)", ylim=(0, top))
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(f"Where AP50 is lost (TIDE; AP50 {errors['AP50']:.3f})")
    fig.tight_layout()
    save_figure(fig, path)
