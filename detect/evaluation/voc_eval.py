"""PASCAL VOC average precision of detections (VOC devkit semantics).

Same inputs as `coco_eval`: a COCO gt dict (with an optional "difficult": 0/1 per
annotation) and COCO results. Per class, detections are ranked by score; each is
matched to the gt box of its image and class with the highest IoU; it is a true
positive when that IoU is > the threshold (strictly, as in the devkit) and the gt box is
not yet taken, a false positive when the box is taken (duplicate) or the IoU is too low.
A match to a "difficult" or crowd gt is neither: such boxes are not counted in the
number of positives either.

Boxes are continuous xyxy (`x2 = x + w`), so areas are plain `w * h`; the devkit's
`+1` pixel areas belong to its 1-based inclusive pixel boxes.
"""

import numpy as np

from detect.evaluation.coco_eval import category_names, check_detections, check_ground_truth
from detect.ops.boxes import pairwise_iou_np


def voc_ap(recall, precision, use_07_metric=False):
    """Interpolated average precision of one ranked list.

    recall, precision: (D,) arrays along the score-ranked detections.
    use_07_metric: True for VOC2007's 11-point AP (mean over t = 0, 0.1, ..., 1 of the
        best precision at recall >= t), False for VOC2010+'s area under the monotone
        precision envelope (all recall points).
    Returns a float in [0, 1]; 0.0 for empty inputs.
    """
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if use_07_metric:
        total = 0.0
        # t = i / 10 is exact for recalls such as 3/10; np.arange(0, 1.1, 0.1)[3] is
        # 0.30000000000000004 and would skip a recall of exactly 0.3.
        for i in range(11):
            reached = precision[recall >= i / 10]
            total += reached.max() if reached.size else 0.0
        return float(total / 11)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def xywh_to_xyxy(xywh):
    """(N, 4) xywh -> (N, 4) float64 xyxy."""
    boxes = np.asarray(xywh, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


def _class_ground_truth(gt, category_id):
    """{image_id: ((G, 4) xyxy boxes, (G,) bool ignore)} and the count of non-ignored boxes."""
    per_image = {}
    for ann in gt["annotations"]:
        if ann["category_id"] == category_id:
            ignore = bool(ann.get("difficult", 0)) or bool(ann.get("iscrowd", 0))
            per_image.setdefault(ann["image_id"], []).append((ann["bbox"], ignore))
    npos = 0
    for image_id, entries in per_image.items():
        ignore = np.array([e[1] for e in entries], dtype=bool)
        per_image[image_id] = (xywh_to_xyxy([e[0] for e in entries]), ignore)
        npos += int((~ignore).sum())
    return per_image, npos


def _match(per_image, dets, iou_threshold):
    """(D,) true-positive and false-positive flags of `dets` ranked by descending score."""
    order = np.argsort([-d["score"] for d in dets], kind="stable")
    tp = np.zeros(len(dets))
    fp = np.zeros(len(dets))
    taken = {image_id: np.zeros(len(ign), dtype=bool) for image_id, (_, ign) in per_image.items()}
    for rank, index in enumerate(order):
        det = dets[index]
        if det["image_id"] not in per_image:
            fp[rank] = 1
            continue
        boxes, ignore = per_image[det["image_id"]]
        ious = pairwise_iou_np(xywh_to_xyxy(det["bbox"]), boxes)[0]
        best = int(np.argmax(ious))
        if ious[best] <= iou_threshold:
            fp[rank] = 1
        elif ignore[best]:
            continue
        elif taken[det["image_id"]][best]:
            fp[rank] = 1
        else:
            tp[rank] = 1
            taken[det["image_id"]][best] = True
    return tp, fp


def voc_evaluate(gt, detections, iou_threshold=0.5):
    """VOC mean AP of COCO results `detections` against the COCO gt dict `gt`.

    Returns {"mAP50": all-point mAP, "mAP50_07": 11-point mAP,
             "per_class": {name: {"AP": float, "AP07": float}}}.
    The keys say 50 whatever `iou_threshold` is. A class without non-difficult ground
    truth has {"AP": None, "AP07": None} and is left out of the means; the means are
    None when no class has ground truth. Raises DetectError for malformed input.
    """
    check_ground_truth(gt)
    plain = check_detections(gt, detections)
    cats = sorted(gt["categories"], key=lambda c: c["id"])
    per_class = {}
    for cat, name in zip(cats, category_names(gt)):
        per_image, npos = _class_ground_truth(gt, cat["id"])
        if npos == 0:
            per_class[name] = {"AP": None, "AP07": None}
            continue
        tp, fp = _match(per_image, [d for d in plain if d["category_id"] == cat["id"]], iou_threshold)
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        recall = tp / npos
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        per_class[name] = {"AP": voc_ap(recall, precision, use_07_metric=False),
                           "AP07": voc_ap(recall, precision, use_07_metric=True)}
    present = [v for v in per_class.values() if v["AP"] is not None]
    return {
        "mAP50": float(np.mean([v["AP"] for v in present])) if present else None,
        "mAP50_07": float(np.mean([v["AP07"] for v in present])) if present else None,
        "per_class": per_class,
    }
