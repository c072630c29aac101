"""COCO box (and mask) evaluation of detections with pycocotools.

Inputs, shared by every module of `detect.evaluation`:

- ground truth: a COCO dict with `images` ({"id", ...}), `annotations` ({"id",
  "image_id", "category_id", "bbox": [x, y, w, h], "area", "iscrowd", optional
  "difficult": 0/1}) and `categories` ({"id", "name"}, ids arbitrary, e.g. 2, 5, 11);
- detections: COCO results format, a list of {"image_id", "category_id" (original
  category ids), "bbox": [x, y, w, h] in pixels, "score"}.

Mask detections (Mask R-CNN) also carry "segmentation", COCO compressed RLE of the image
({"size": [h, w], "counts": str}); `coco_evaluate(..., iou_type="segm")` scores those
against the gt's "segmentation" (polygons or RLE; a gt object without one counts as its
box), as pycocotools' iouType "segm" does.

Classes are always listed in ascending category id order, the order of the K axis of
pycocotools' arrays (`category_names`). COCO metrics ignore "difficult", as pycocotools
does; VOC metrics (`voc_eval`) honour it.
"""

import contextlib
import copy
import io
import json
import logging
import math
import numbers

import numpy as np

from detect.data.coco import annotation_values, annotation_where, category_table
from detect.errors import DetectError

logger = logging.getLogger(__name__)

# The 12 COCOeval.stats, in pycocotools' order.
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
              "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")

_DETECTION_KEYS = ("image_id", "category_id", "bbox", "score")


def category_names(gt):
    """Class names of a COCO gt dict, in ascending category id order (list of str)."""
    return [c["name"] for c in sorted(gt["categories"], key=lambda c: c["id"])]


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_ground_truth(gt, source="ground truth"):
    """Raise DetectError unless `gt` is a usable COCO gt dict; `source` names it in messages."""
    if not isinstance(gt, dict):
        raise DetectError(f"{source}: expected a COCO JSON object, got {type(gt).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(gt.get(key), list):
            raise DetectError(f"{source}: missing list '{key}'")
    category_ids = set(category_table(gt["categories"], source))  # same rules as every command
    image_ids = set()
    for i, image in enumerate(gt["images"]):
        if not isinstance(image, dict) or "id" not in image:
            raise DetectError(f"{source}: images[{i}] has no 'id'")
        image_ids.add(image["id"])
    for i, ann in enumerate(gt["annotations"]):
        where = annotation_where(source, ann, i)
        if not isinstance(ann, dict) or any(k not in ann for k in ("image_id", "category_id", "bbox")):
            raise DetectError(f"{where} needs 'image_id', 'category_id' and 'bbox'")
        if ann["image_id"] not in image_ids:
            raise DetectError(f"{where}: image_id {ann['image_id']!r} is not in 'images'")
        if ann["category_id"] not in category_ids:
            raise DetectError(f"{where}: category_id {ann['category_id']!r} is not in 'categories'")
        annotation_values(ann, where)
        _check_bbox(ann["bbox"], where)


def _check_bbox(bbox, where):
    if (not isinstance(bbox, (list, tuple, np.ndarray)) or len(bbox) != 4
            or not all(_is_real(v) and math.isfinite(v) for v in bbox)):
        raise DetectError(f"{where}: bbox must be 4 finite numbers [x, y, w, h], got {bbox!r}")
    if bbox[2] < 0 or bbox[3] < 0:
        raise DetectError(f"{where}: bbox {list(bbox)!r} has a negative width or height")


def check_detections(gt, detections, source="detections"):
    """Validate COCO results against `gt` and return them as plain Python values.

    Returns a new list of {"image_id", "category_id", "bbox": [4 floats], "score": float}
    (NumPy scalars and arrays become Python numbers). Raises DetectError naming the index
    of a malformed entry, or the unknown image id / category id.
    """
    if not isinstance(detections, (list, tuple)):
        raise DetectError(f"{source}: expected a list of COCO results, got {type(detections).__name__}")
    image_ids = {image["id"] for image in gt["images"]}
    category_ids = {cat["id"] for cat in gt["categories"]}
    plain = []
    for i, det in enumerate(detections):
        where = f"{source}[{i}]"
        if not isinstance(det, dict):
            raise DetectError(f"{where}: expected an object with keys {', '.join(_DETECTION_KEYS)}")
        missing = [k for k in _DETECTION_KEYS if k not in det]
        if missing:
            raise DetectError(f"{where}: missing key '{missing[0]}'")
        _check_bbox(det["bbox"], where)
        score = det["score"]
        if not (_is_real(score) and math.isfinite(score)):
            raise DetectError(f"{where}: score must be a finite number, got {score!r}")
        image_id = _python_scalar(det["image_id"])
        category_id = _python_scalar(det["category_id"])
        for key, value in (("image_id", image_id), ("category_id", category_id)):
            if isinstance(value, bool) or not isinstance(value, (numbers.Integral, str)):
                raise DetectError(f"{where}: {key} must be an integer id, got {value!r}")
        if image_id not in image_ids:
            raise DetectError(f"{where}: image_id {image_id!r} is not an image of the ground truth")
        if category_id not in category_ids:
            known = ", ".join(str(c) for c in sorted(category_ids))
            raise DetectError(f"{where}: unknown category_id {category_id!r} (known: {known})")
        entry = {"image_id": image_id, "category_id": category_id,
                 "bbox": [float(v) for v in det["bbox"]], "score": float(score)}
        if "segmentation" in det:
            entry["segmentation"] = _check_result_rle(det["segmentation"], where)
        plain.append(entry)
    return plain


def _check_result_rle(rle, where):
    if not isinstance(rle, dict) or not isinstance(rle.get("counts"), (str, bytes)) \
            or not isinstance(rle.get("size"), (list, tuple)) or len(rle["size"]) != 2:
        raise DetectError(f"{where}: segmentation must be COCO compressed RLE {{'size': [h, w], 'counts': str}}")
    counts = rle["counts"]
    return {"size": [int(v) for v in rle["size"]], "counts": counts.decode("ascii") if isinstance(counts, bytes)
            else counts}


def has_masks(gt, detections):
    """True when both the gt and the detections carry segmentations (segm AP applies)."""
    return any("segmentation" in d for d in detections) and any(
        a.get("segmentation") for a in gt.get("annotations", []))


def _python_scalar(value):
    return value.item() if isinstance(value, np.generic) else value


def _coco_from_dict(dataset):
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _with_box_segmentation(dataset):
    """gt objects without a segmentation get their box as a polygon (segm evaluation reads
    every annotation's mask; an object annotated by its box alone is its box)."""
    for ann in dataset["annotations"]:
        if not ann.get("segmentation"):
            x, y, w, h = (float(v) for v in ann["bbox"])
            ann["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    return dataset


def _prepared_ground_truth(gt):
    """A deep copy of `gt` that pycocotools can evaluate.

    Annotation ids are renumbered 1..N: pycocotools records a match as the matched gt
    id, so a gt with id 0 would make its true positive count as a false positive.
    A missing "area" is taken from the box (w * h), as loadRes does for detections.
    """
    dataset = copy.deepcopy(gt)
    for new_id, ann in enumerate(dataset["annotations"], start=1):
        ann["id"] = new_id
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])
        ann.setdefault("iscrowd", 0)
    return dataset


def _run_cocoeval(coco_gt, coco_dt, iou_type="bbox"):
    from pycocotools.cocoeval import COCOeval

    evaluator = COCOeval(coco_gt, coco_dt, iou_type)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def _class_ap(precision):
    """Mean of the valid (> -1) entries of a precision slice, None when there are none."""
    valid = precision[precision > -1]
    return float(np.mean(valid)) if valid.size else None


def coco_evaluate(gt, detections, iou_type="bbox"):
    """COCO bbox (iou_type "bbox") or mask ("segm") metrics of `detections` against `gt`
    (see the module docstring for formats; "segm" scores the detections' segmentation).

    Returns a dict:
      "coco": {name: float} for the 12 COCOeval stats in STAT_NAMES order, as pycocotools
          reports them (-1.0 where the area range has no ground truth); with no detections
          at all (pycocotools' loadRes rejects an empty list) all 12 are 0.0 and a
          "no detections" warning is logged.
      "per_class": {name: AP@[.5:.95] or None}, "per_class_AP50": {name: AP50 or None}:
          area all, 100 detections per image; None for a class without ground truth
          (pycocotools' -1), listed in a warning.
      "gt_count": {name: non-crowd gt boxes}, "det_count": {name: detections}.
      "_precision": np.ndarray (T=10, R=101, K, A=4, M=3), COCOeval's precision array
          (IoU .50:.05:.95, recall 0:.01:1, classes in ascending id order, areas all /
          small / medium / large, maxDets 1 / 10 / 100; -1 where undefined). Writers drop
          keys starting with "_".
    Crowd gt boxes are ignore regions, as in pycocotools. Raises DetectError for
    malformed input (naming the entry) or unknown image / category ids.
    """
    check_ground_truth(gt)
    plain = check_detections(gt, detections)
    dataset = _prepared_ground_truth(gt)
    if iou_type == "segm":
        dataset = _with_box_segmentation(dataset)
        missing = sum("segmentation" not in d for d in plain)
        if missing:
            raise DetectError(f"detections: {missing} of {len(plain)} have no segmentation; segm AP needs masks")
        # loadRes reads a result with a "bbox" as a box (and replaces its segmentation by
        # the box's polygon): a mask result goes in without its box, as detectron2 does.
        plain = [{k: v for k, v in d.items() if k != "bbox"} for d in plain]
    coco_gt = _coco_from_dict(dataset)
    if plain:
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = coco_gt.loadRes(plain)
    else:
        logger.warning("no detections: every COCO metric is reported as 0.0")
        coco_dt = _coco_from_dict({"images": list(dataset["images"]),
                                   "categories": copy.deepcopy(dataset["categories"]),
                                   "annotations": []})
    evaluator = _run_cocoeval(coco_gt, coco_dt, iou_type)
    stats = [float(s) for s in evaluator.stats] if plain else [0.0] * len(STAT_NAMES)
    precision = evaluator.eval["precision"]

    names = category_names(gt)
    per_class, per_class_50 = {}, {}
    for k, name in enumerate(names):
        # area "all" is index 0, maxDets 100 the last index; IoU 0.5 is the first threshold.
        per_class[name] = _class_ap(precision[:, :, k, 0, -1])
        per_class_50[name] = _class_ap(precision[0, :, k, 0, -1])
    absent = [name for name in names if per_class[name] is None]
    if absent:
        logger.warning("classes without ground truth (reported as absent): %s", ", ".join(absent))

    return {
        "coco": dict(zip(STAT_NAMES, stats)),
        "per_class": per_class,
        "per_class_AP50": per_class_50,
        "gt_count": _count_per_class(gt, (a for a in gt["annotations"] if not a.get("iscrowd", 0))),
        "det_count": _count_per_class(gt, plain),
        "_precision": precision,
    }


def ground_truth_for(dataset, dataset_format=None, annotations_path=None):
    """The COCO gt dict to score detections on `dataset` against.

    COCO datasets: the original annotation file, with its own "area" (e.g. the segmentation
    area), "iscrowd", annotation ids and boxes the loader clipped or dropped, so APs / APm /
    APl equal pycocotools run on the file; restricted to the images `dataset` holds (a
    split, or images that failed validation, are left out with a warning). Other formats:
    `dataset.to_coco()`, whose "area" is the box's w * h.

    Args:
      dataset: detect.data.records.Dataset (its records' image ids are the file's ids).
      dataset_format: the config's dataset.format (coco | voc | csv | ...).
      annotations_path: the split's annotation file (COCO json).
    """
    if dataset_format != "coco" or not annotations_path:
        return dataset.to_coco()
    source = str(annotations_path)
    try:
        with open(source, encoding="utf-8") as f:
            gt = json.load(f)
    except (OSError, ValueError) as e:
        raise DetectError(f"{source}: cannot read the COCO annotations: {e}") from None
    check_ground_truth(gt, source=source)
    kept = {int(record.image_id) for record in dataset.records}
    images = [image for image in gt["images"] if image["id"] in kept]
    if len(images) < len(gt["images"]):
        logger.warning("%s: evaluating %d of its %d images (the others are not in the dataset)",
                       source, len(images), len(gt["images"]))
    annotations = [ann for ann in gt["annotations"] if ann["image_id"] in kept]
    return {**gt, "images": images, "annotations": annotations}


def _count_per_class(gt, entries):
    """{name: number of `entries` (dicts with "category_id")}, in ascending category id order."""
    id_to_name = {c["id"]: c["name"] for c in sorted(gt["categories"], key=lambda c: c["id"])}
    counts = dict.fromkeys(id_to_name.values(), 0)
    for entry in entries:
        counts[id_to_name[entry["category_id"]]] += 1
    return counts
