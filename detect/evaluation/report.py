"""Evaluate detections and write the evaluation folder.

`evaluate_detections` writes, atomically (temp file + os.replace), into `out_dir`:

- metrics.json: {"coco": 12 COCOeval stats, "per_class": {name: AP or null},
  with mask detections also "segm" (the 12 stats of iouType "segm"), "per_class_segm",
  "per_class_segm_AP50",
  "per_class_AP50": {name: AP50 or null}, "voc": {"mAP50", "mAP50_07", "per_class"},
  "gt_count", "det_count", "num_images", "confusion_matrix": {"labels", "matrix"},
  plus the caller's `extra` keys (e.g. "seconds_per_image")};
- detections.json: the detections as given (COCO results format);
- errors.json: the TIDE error breakdown (`errors.error_breakdown`, AP values 0-1);
- pr_curves.png, confusion_matrix.png, errors.png;
- galleries/*.jpg: the worst images per error type, when the images are known;
- report.html: all of it on one self-contained page (`html_report.write_report`).

Class order is ascending category id everywhere.
"""

import json
import os

from detect.errors import DetectError
from detect.evaluation.coco_eval import (STAT_NAMES, category_names, check_detections,
                                         check_ground_truth, coco_evaluate, has_masks)
from detect.evaluation.errors import error_breakdown
from detect.evaluation.galleries import write_galleries
from detect.evaluation.html_report import write_report
from detect.evaluation.plots import (confusion_matrix, plot_confusion_matrix, plot_error_breakdown,
                                     plot_pr_curves)
from detect.evaluation.voc_eval import voc_evaluate
from detect.io import write_json


def evaluate_detections(gt, detections, out_dir, extra=None, image_paths=None, model=None, source=""):
    """Evaluate COCO results against a COCO gt dict and write the evaluation folder.

    gt: COCO dict (images, annotations with bbox xywh / iscrowd / optional difficult,
        categories with arbitrary ids); detections: list of {"image_id", "category_id",
        "bbox" xywh, "score"}; out_dir: folder, created if needed; extra: JSON-able keys
        merged into metrics.json (they may not replace a metric key); image_paths:
        {image_id: image file} for the galleries, or None for none; model: the model
        section of report.html (see `html_report.write_report`) or None; source: the
        line under the report's title.
    Returns the metrics dict written to metrics.json. Raises DetectError for malformed
    input; no detections at all gives AP 0 with a "no detections" warning.
    """
    coco = coco_evaluate(gt, detections)
    precision = coco.pop("_precision")
    segm = coco_evaluate(gt, detections, iou_type="segm") if has_masks(gt, detections) else None
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
    if segm is not None:  # Mask R-CNN: mask AP, the same 12 keys as "coco"
        metrics.update(segm=segm["coco"], per_class_segm=segm["per_class"], per_class_segm_AP50=segm["per_class_AP50"])
    clash = sorted(set(extra or {}) & set(metrics))
    if clash:
        raise ValueError(f"extra keys would replace metrics: {', '.join(clash)}")
    metrics.update(extra or {})

    errors = error_breakdown(gt, detections)
    error_records = errors.pop("_errors")

    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, "detections.json"), list(detections))
    figures = {name: os.path.join(out_dir, f"{name}.png") for name in ("pr_curves", "confusion_matrix", "errors")}
    plot_pr_curves(precision, names, figures["pr_curves"])
    plot_confusion_matrix(matrix, names, figures["confusion_matrix"])
    plot_error_breakdown(errors, figures["errors"])
    galleries = None
    if image_paths:
        galleries = write_galleries(gt, detections, error_records, image_paths, os.path.join(out_dir, "galleries"))
    write_json(os.path.join(out_dir, "metrics.json"), metrics)
    write_json(os.path.join(out_dir, "errors.json"), errors)
    write_report(os.path.join(out_dir, "report.html"), metrics, errors, figures, galleries, model, source)
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


def evaluate_files(detections_path, annotations_path, out_dir, images=None):
    """`detect evaluate --detections FILE --annotations FILE [--images DIR]`.

    detections_path: COCO results JSON (a list); annotations_path: COCO gt JSON; images:
    the folder the gt's `file_name`s are relative to (galleries), or None.
    Writes the evaluation folder `out_dir` (see `evaluate_detections`) and returns the
    metrics. Raises DetectError naming the file that is missing, not JSON, or malformed.
    """
    gt = _load_json(annotations_path, "annotations")
    detections = _load_json(detections_path, "detections")
    check_ground_truth(gt, source=str(annotations_path))
    check_detections(gt, detections, source=str(detections_path))
    image_paths = None
    if images is not None:
        if not os.path.isdir(images):
            raise DetectError(f"--images: folder not found: {images}")
        image_paths = {image["id"]: os.path.join(images, image["file_name"])
                       for image in gt["images"] if image.get("file_name")}
    return evaluate_detections(gt, detections, out_dir, image_paths=image_paths,
                               source=f"{detections_path} against {annotations_path}")


def _fmt(value):
    # None (class absent) and pycocotools' -1 (no gt in that area range) print as "-".
    return "-" if value is None or value < 0 else f"{value:.3f}"


def format_table(metrics):
    """Per-class table (class, AP, AP50, gt, dets) and a summary line, as one string."""
    names = list(metrics["per_class"])
    width = max([len("class")] + [len(n) for n in names])
    masks = "per_class_segm" in metrics  # Mask R-CNN: mask AP columns after the box ones
    mask_head = f"  {'maskAP':>6}  {'mask50':>6}" if masks else ""
    lines = [f"{'class':<{width}}  {'AP':>6}  {'AP50':>6}{mask_head}  {'gt':>6}  {'dets':>6}"]
    for name in names:
        mask_cells = (f"  {_fmt(metrics['per_class_segm'][name]):>6}  {_fmt(metrics['per_class_segm_AP50'][name]):>6}"
                      if masks else "")
        lines.append(f"{name:<{width}}  {_fmt(metrics['per_class'][name]):>6}  "
                     f"{_fmt(metrics['per_class_AP50'][name]):>6}{mask_cells}  "
                     f"{metrics['gt_count'][name]:>6}  {metrics['det_count'][name]:>6}")
    coco = metrics["coco"]
    summary = "  ".join(f"{key} {_fmt(coco[key])}" for key in (*STAT_NAMES[:6], "AR100"))
    summary += f"  VOC mAP50 {_fmt(metrics['voc']['mAP50'])}"
    summary += f"  images {metrics['num_images']}"
    lines.append(summary)
    if "segm" in metrics:
        segm = metrics["segm"]
        lines.append("mask " + "  ".join(f"{key} {_fmt(segm[key])}" for key in (*STAT_NAMES[:6], "AR100")))
    return "\n".join(lines)


def format_errors(errors_path):
    """One line of the TIDE breakdown from errors.json: "TIDE dAP50  Cls 0.012  Loc ..."."""
    with open(errors_path, encoding="utf-8") as f:
        errors = json.load(f)
    parts = [f"{k} {v:.3f}" for k, v in errors["dAP"].items()]
    parts += [f"{k} {errors[k]:.3f}" for k in ("FalsePos", "FalseNeg")]
    return "TIDE dAP50  " + "  ".join(parts)
