"""Evaluate detections and write the evaluation folder.

`evaluate_detections` writes, atomically (temp file + os.replace), into `out_dir`:

- metrics.json: {"coco": 12 COCOeval stats, "per_class": {name: AP or null},
  "per_class_AP50": {name: AP50 or null}, "voc": {"mAP50", "mAP50_07", "per_class"},
  "gt_count", "det_count", "num_images", "confusion_matrix": {"labels", "matrix"},
  plus the caller's `extra` keys (e.g. "seconds_per_image")};
- detections.json: the detections as given (COCO results format);
- pr_curves.png, confusion_matrix.png.

Class order is ascending category id everywhere.
"""

import json
import os
import uuid

import numpy as np

from detect.errors import DetectError
from detect.evaluation.coco_eval import (STAT_NAMES, category_names, check_detections,
                                         check_ground_truth, coco_evaluate)
from detect.evaluation.plots import confusion_matrix, plot_confusion_matrix, plot_pr_curves
from detect.evaluation.voc_eval import voc_evaluate


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def write_json(path, data):
    """Write `data` as JSON to `path` atomically (temp file in the same folder, then os.replace)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    # A unique name in the target folder: os.replace is atomic within a file system,
    # and open() (unlike mkstemp) leaves the permissions to the umask.
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            json.dump(data, f, indent=1, default=_json_default)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def evaluate_detections(gt, detections, out_dir, extra=None):
    """Evaluate COCO results against a COCO gt dict and write the evaluation folder.

    gt: COCO dict (images, annotations with bbox xywh / iscrowd / optional difficult,
        categories with arbitrary ids); detections: list of {"image_id", "category_id",
        "bbox" xywh, "score"}; out_dir: folder, created if needed; extra: JSON-able keys
        merged into metrics.json (they may not replace a metric key).
    Returns the metrics dict written to metrics.json. Raises DetectError for malformed
    input; no detections at all gives AP 0 with a "no detections" warning.
    """
    coco = coco_evaluate(gt, detections)
    precision = coco.pop("_precision")
    voc = voc_evaluate(gt, detections)
    names = category_names(gt)
    matrix = confusion_matrix(gt, detections)
    metrics = {
        "coco": coco["coco"],
        "per_class": coco["per_class"],
        "per_class_AP50": coco["per_class_AP50"],
        "voc": voc,
        "gt_count": coco["gt_count"],
        "det_count": coco["det_count"],
        "num_images": len(gt["images"]),
        "confusion_matrix": {"labels": ["background"] + names, "matrix": matrix.tolist()},
    }
    clash = sorted(set(extra or {}) & set(metrics))
    if clash:
        raise ValueError(f"extra keys would replace metrics: {', '.join(clash)}")
    metrics.update(extra or {})

    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, "detections.json"), list(detections))
    plot_pr_curves(precision, names, os.path.join(out_dir, "pr_curves.png"))
    plot_confusion_matrix(matrix, names, os.path.join(out_dir, "confusion_matrix.png"))
    write_json(os.path.join(out_dir, "metrics.json"), metrics)
    return metrics


def _load_json(path, what):
    """Parsed content of the JSON file `path`; DetectError naming it when missing or invalid."""
    if not os.path.isfile(path):
        raise DetectError(f"{what} file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DetectError(f"{path}: invalid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DetectError(f"{path}: cannot read {what} file ({e})") from None


def evaluate_files(detections_path, annotations_path, out_dir):
    """`detect evaluate --detections FILE --annotations FILE`: evaluate two JSON files.

    detections_path: COCO results JSON (a list); annotations_path: COCO gt JSON.
    Writes the evaluation folder `out_dir` (see `evaluate_detections`) and returns the
    metrics. Raises DetectError naming the file that is missing, not JSON, or malformed.
    """
    gt = _load_json(annotations_path, "annotations")
    detections = _load_json(detections_path, "detections")
    check_ground_truth(gt, source=str(annotations_path))
    check_detections(gt, detections, source=str(detections_path))
    return evaluate_detections(gt, detections, out_dir)


def _fmt(value):
    # None (class absent) and pycocotools' -1 (no gt in that area range) print as "-".
    return "-" if value is None or value < 0 else f"{value:.3f}"


def format_table(metrics):
    """Per-class table (class, AP, AP50, gt, dets) and a summary line, as one string."""
    names = list(metrics["per_class"])
    width = max([len("class")] + [len(n) for n in names])
    lines = [f"{'class':<{width}}  {'AP':>6}  {'AP50':>6}  {'gt':>6}  {'dets':>6}"]
    for name in names:
        lines.append(f"{name:<{width}}  {_fmt(metrics['per_class'][name]):>6}  "
                     f"{_fmt(metrics['per_class_AP50'][name]):>6}  "
                     f"{metrics['gt_count'][name]:>6}  {metrics['det_count'][name]:>6}")
    coco = metrics["coco"]
    summary = "  ".join(f"{key} {_fmt(coco[key])}" for key in (*STAT_NAMES[:6], "AR100"))
    summary += f"  VOC mAP50 {_fmt(metrics['voc']['mAP50'])}"
    summary += f"  images {metrics['num_images']}"
    lines.append(summary)
    return "\n".join(lines)
