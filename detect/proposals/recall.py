"""Proposal recall: the fraction of ground-truth boxes some proposal covers.

Recall is pooled over all ground-truth boxes of all images (as in the Faster R-CNN paper's
proposal figures), so an image with no ground truth adds nothing; when there is no ground
truth at all, recall is undefined and every function returns NaN for it. Only the first
`top_n` proposals of each image count, in the order given (selective search order, or
descending score for an RPN). Crowd and padding boxes must be removed by the caller.

Boxes are (N, 4) float32 xyxy in pixels of the image; IoU uses continuous coordinates
(area = (x2 - x1) * (y2 - y1)).
"""

import numpy as np

from detect.ops.boxes import pairwise_iou_np

# .50:.05:.95 written out: np.arange with a float step can gain or lose its last value.
IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
PROPOSAL_COUNTS = (10, 20, 50, 100, 200, 300, 500, 1000, 2000)


def _as_boxes(boxes):
    return np.asarray(boxes, np.float64).reshape(-1, 4)


def best_iou(proposals_per_image, gt_per_image, counts):
    """Best IoU of each gt box with the first n proposals of its image, for each n.

    Args:
        proposals_per_image: list of (P_i, 4) xyxy, best first.
        gt_per_image: list of (G_i, 4) xyxy, same length.
        counts: C proposal counts (None in place of a count: all proposals).

    Returns:
        (C, G) float64, G = total gt boxes; 0 where an image has no proposals.
    """
    if len(proposals_per_image) != len(gt_per_image):
        raise ValueError(
            f"{len(proposals_per_image)} proposal lists but {len(gt_per_image)} gt lists"
        )
    columns = []
    for proposals, gt in zip(proposals_per_image, gt_per_image):
        proposals, gt = _as_boxes(proposals), _as_boxes(gt)
        best = np.zeros((len(counts), len(gt)))
        if len(gt) and len(proposals):
            n_max = max(len(proposals) if n is None else min(int(n), len(proposals))
                        for n in counts)
            # Running max over the proposal axis: row k is the best IoU among the first k + 1.
            running = np.maximum.accumulate(pairwise_iou_np(proposals[:n_max], gt), axis=0)
            for c, n in enumerate(counts):
                n = n_max if n is None else min(int(n), n_max)
                if n > 0:
                    best[c] = running[n - 1]
        columns.append(best)
    if not columns:
        return np.zeros((len(counts), 0))
    return np.concatenate(columns, axis=1)


def _recall(best, threshold):
    """Fraction of gt with best IoU >= threshold, per row of best (C, G); NaN when G == 0."""
    if best.shape[1] == 0:
        return np.full(best.shape[0], np.nan)
    # IoUs from float arithmetic can miss a hand-computed threshold by an ulp.
    return np.mean(best >= threshold - 1e-9, axis=1)


def recall_at_iou(proposals_per_image, gt_per_image, iou_thresholds=IOU_THRESHOLDS,
                  top_n=None):
    """Recall at each IoU threshold using the first top_n proposals of each image.

    Args:
        proposals_per_image: list of (P_i, 4) xyxy, best first.
        gt_per_image: list of (G_i, 4) xyxy, same length.
        iou_thresholds: T thresholds; a gt box counts when some proposal has IoU >= t.
        top_n: proposals per image to use (None: all).

    Returns:
        (T,) float64 recall (NaN when there is no gt box).
    """
    best = best_iou(proposals_per_image, gt_per_image, [top_n])
    return np.array([_recall(best, t)[0] for t in iou_thresholds])


def recall_vs_count(proposals_per_image, gt_per_image, counts=PROPOSAL_COUNTS, iou=0.5):
    """Recall at one IoU threshold for each number of proposals per image.

    Returns:
        (C,) float64 recall for counts (NaN when there is no gt box).
    """
    return _recall(best_iou(proposals_per_image, gt_per_image, list(counts)), iou)


def average_recall(proposals_per_image, gt_per_image, top_n=None):
    """Mean recall over IoU .50:.05:.95 (Hosang et al.'s AR) with top_n proposals per image."""
    return float(np.mean(recall_at_iou(proposals_per_image, gt_per_image, IOU_THRESHOLDS,
                                       top_n)))


def recall_table(named, gt_per_image, top_ns=(300, 2000), ious=(0.5, 0.7)):
    """Markdown table: one row per proposal method, recall at each (top_n, IoU) and AR.

    Args:
        named: {method name: list of (P_i, 4) xyxy proposals per image}.
        gt_per_image: list of (G_i, 4) xyxy.
        top_ns: proposals per image for the column groups.
        ious: IoU thresholds of the recall columns.

    Returns:
        str: header, separator and one row per method; undefined recall shows as "-".
    """
    header = ["method", "proposals/image"]
    for n in top_ns:
        header += [f"R@{iou:g} (N={n})" for iou in ious] + [f"AR (N={n})"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, proposals in named.items():
        mean_count = np.mean([len(_as_boxes(p)) for p in proposals]) if proposals else 0.0
        cells = [str(name), f"{mean_count:.1f}"]
        for n in top_ns:
            best = best_iou(proposals, gt_per_image, [n])
            cells += [_cell(_recall(best, iou)[0]) for iou in ious]
            cells.append(_cell(np.mean([_recall(best, t)[0] for t in IOU_THRESHOLDS])))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(value):
    return "-" if np.isnan(value) else f"{value:.3f}"


def plot_recall(named, gt_per_image, path, top_ns=(300, 2000), ious=(0.5, 0.7),
                counts=PROPOSAL_COUNTS):
    """PNG with two panels, as in the Faster R-CNN paper's proposal figure.

    Left: recall vs IoU threshold (0.5..0.95) with top_ns proposals per image (one line
    style per N). Right: recall vs proposals per image (log axis) at each IoU in ious.
    One colour per method.

    Args:
        named: {method name: list of (P_i, 4) xyxy proposals per image}.
        gt_per_image: list of (G_i, 4) xyxy.
        path: PNG file to write (atomically).

    Returns:
        path.
    """
    from matplotlib.figure import Figure

    from detect.evaluation.plots import save_figure

    styles = ["-", "--", ":", "-."]
    fig = Figure(figsize=(12, 5))
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for m, (name, proposals) in enumerate(named.items()):
        color = f"C{m % 10}"
        for s, n in enumerate(top_ns):
            recall = recall_at_iou(proposals, gt_per_image, IOU_THRESHOLDS, top_n=n)
            left.plot(IOU_THRESHOLDS, recall, styles[s % 4], color=color, marker=".",
                      label=f"{name}, N={n}")
        for s, iou in enumerate(ious):
            recall = recall_vs_count(proposals, gt_per_image, counts, iou)
            right.plot(counts, recall, styles[s % 4], color=color, marker=".",
                       label=f"{name}, IoU={iou:g}")
    left.set(title="recall vs IoU", xlabel="IoU threshold", ylabel="recall",
             xlim=(0.5, 1.0), ylim=(0, 1.02))
    right.set(title="recall vs proposals", xlabel="proposals per image", ylabel="recall",
              xscale="log", ylim=(0, 1.02))
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    return path
