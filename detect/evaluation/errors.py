"""Where a detector loses AP: the TIDE error breakdown (Bolya et al., ECCV 2020).

Same inputs as `coco_eval`: a COCO gt dict and COCO results (`bbox` xywh pixels).
Definitions follow tidecv 1.0.1 (`TIDE(pos_threshold=0.5, background_threshold=0.1)`,
box mode), so the numbers agree with `tidecv` run on the same files:

- Per image, detections are ranked by score (ties keep file order) and only the first
  `max_dets` (100) are kept, over all classes. Each is matched greedily to the free gt box
  of its class with the highest IoU; IoU >= 0.5 makes a true positive. An unmatched
  detection whose crowd-IoU (intersection / detection area) with a crowd box of its class
  is > 0.5 is ignored for AP (it can still carry an error, as in tidecv).
- Every unmatched detection gets the first error type that applies:
    Bkg  when the image has no (non-crowd) gt;
    Loc  same class, 0.1 <= IoU <= 0.5 with its best same-class gt (used or not);
    Cls  IoU >= 0.5 with a gt of another class;
    Dupe IoU >= 0.5 with a same-class gt that another detection already matched;
    Bkg  IoU <= 0.1 with every gt;
    Both otherwise (wrong class and poorly localized).
  A gt that is not matched and not the target of a Loc or Cls error is Miss.
- AP is COCO's 101-point interpolated AP at IoU 0.5, averaged over the classes that have
  gt or detections (a class with detections and no gt counts with AP 0; COCO leaves it
  out, so `AP50` here can be below metrics.json's AP50).
- dAP of a type = mAP after fixing every error of that type - mAP before, clipped at 0:
  a fixed Loc / Cls error becomes a true positive (Cls moves to the gt's class) when it is
  the highest-scoring error on a free gt, and is removed otherwise; fixed Dupe, Bkg and
  Both errors are removed; a fixed Miss removes its gt. FalsePos = mAP with every false
  positive scored 0 and every true positive 1; FalseNeg = mAP with the unmatched gt
  removed (both minus mAP, not clipped).

All AP values are fractions 0-1 (tidecv prints them x100).
"""

import collections

import numpy as np

from detect.evaluation.coco_eval import category_names, check_detections, check_ground_truth

MAIN_ERRORS = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss")
SPECIAL_ERRORS = ("FalsePos", "FalseNeg")
# tidecv samples recall at x / 100 (not linspace, whose 0.01 * 3 != 0.03).
_RECALL_POINTS = np.arange(101) / 100


def _iou(dets, gts, crowd):
    """pycocotools bbox IoU, (D, G); dets, gts: (D, 4), (G, 4) xywh; crowd: (G,) bool
    (for crowd gt the IoU is intersection / detection area)."""
    from pycocotools import mask as mask_utils

    if len(dets) == 0 or len(gts) == 0:
        return np.zeros((len(dets), len(gts)))
    return np.asarray(mask_utils.iou(np.asarray(dets, dtype=np.float64),
                                     np.asarray(gts, dtype=np.float64),
                                     [int(c) for c in crowd]), dtype=np.float64).reshape(len(dets), len(gts))


def _match(dets, gts, pos_threshold):
    """Greedy class-aware matching; returns ((D,) matched gt index or -1, (D, G) IoU)."""
    iou = _iou([d["bbox"] for d in dets], [g["bbox"] for g in gts], [False] * len(gts))
    matched = np.full(len(dets), -1)
    if not gts:
        return matched, iou
    same = np.array([d["class"] for d in dets])[:, None] == np.array([g["class"] for g in gts])[None, :]
    free = iou * same
    for d in range(len(dets)):
        g = int(np.argmax(free[d]))
        if free[d, g] >= pos_threshold:
            matched[d] = g
            free[:, g] = 0
    return matched, iou


def _ignored(dets, crowds, matched, pos_threshold):
    """(D,) bool: unmatched detections inside a crowd box of their class (crowd-IoU > pos)."""
    ignored = np.zeros(len(dets), dtype=bool)
    for crowd in crowds:
        inside = _iou([d["bbox"] for d in dets], [crowd["bbox"]], [True])[:, 0]
        for d, det in enumerate(dets):
            if matched[d] < 0 and inside[d] > pos_threshold and det["class"] == crowd["class"]:
                ignored[d] = True
    return ignored


def _error_type(d, iou, same, gt_used, thresholds):
    """(type, target gt index or None) of the unmatched detection `d` (tidecv's order)."""
    pos, bg = thresholds
    same_iou = iou[d] * same[d]
    g = int(np.argmax(same_iou))
    if bg <= same_iou[g] <= pos:
        return "Loc", g
    other_iou = iou[d] * ~same[d]
    g = int(np.argmax(other_iou))
    if other_iou[g] >= pos:
        return "Cls", g
    if np.max(same_iou * gt_used) >= pos:
        return "Dupe", None
    if np.max(iou[d]) <= bg:
        return "Bkg", None
    return "Both", None


def _image_errors(dets, gts, crowds, thresholds, max_dets):
    """Match and classify one image.

    dets: detection dicts {"class", "score", "bbox" xywh, "index"}; gts, crowds: gt dicts
    {"class", "bbox", "index"}. Returns (kept dets ranked, (D,) matched gt or -1,
    (D,) ignored, errors): errors are dicts {"type", "det" (rank) or "gt" (index into
    gts), "target" (gt index for Loc / Cls), "fixable"}, detection errors in rank order
    then Miss errors in gt order.
    """
    pos, _ = thresholds
    dets = sorted(dets, key=lambda det: -det["score"])[:max_dets]
    matched, iou = _match(dets, gts, pos)
    ignored = _ignored(dets, crowds, matched, pos)
    errors, best = [], {}  # best: gt index -> rank of its highest-scoring Loc/Cls error
    gt_used = np.zeros(len(gts), dtype=bool)
    gt_used[matched[matched >= 0]] = True
    same = (np.array([d["class"] for d in dets])[:, None]
            == np.array([g["class"] for g in gts], dtype=np.int64)[None, :]) if gts else None
    for d in np.flatnonzero(matched < 0):
        if not gts:
            errors.append({"type": "Bkg", "det": int(d)})
            continue
        kind, target = _error_type(d, iou, same, gt_used, thresholds)
        error = {"type": kind, "det": int(d), "target": target}
        if target is not None and not gt_used[target]:
            best.setdefault(target, int(d))  # ranks ascend, so the first is the best
        errors.append(error)
    for error in errors:
        target = error.get("target")
        error["fixable"] = target is not None and best.get(target) == error["det"]
    for g in range(len(gts)):
        if not gt_used[g] and g not in best:
            errors.append({"type": "Miss", "gt": g})
    return dets, matched, ignored, errors


def _ap(points, num_gt):
    """101-point AP (0-1) of [(score, correct), ...] ranked by score (ties: list order)."""
    if num_gt <= 0 or not points:
        return 0.0
    scores = np.array([p[0] for p in points], dtype=np.float64)
    correct = np.array([p[1] for p in points], dtype=bool)[np.argsort(-scores, kind="stable")]
    hits = np.cumsum(correct)
    precision = hits / np.arange(1, len(correct) + 1)
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    index = np.searchsorted(hits / num_gt, _RECALL_POINTS, side="left")
    sampled = np.where(index < len(precision), precision[np.minimum(index, len(precision) - 1)], 0.0)
    return float(sampled.sum() / len(_RECALL_POINTS))


def _class_aps(classes, points, gt):
    """(mean AP over classes with points or gt, {class: AP or None when it has neither})."""
    aps = {}
    for cls in classes:
        pts, num_gt = points.get(cls, []), gt.get(cls, 0)
        aps[cls] = _ap(pts, num_gt) if pts or num_gt > 0 else None
    present = [v for v in aps.values() if v is not None]
    return (float(np.mean(present)) if present else 0.0), aps


def _collect(gt, detections, thresholds, max_dets):
    """Run every image (gt order); returns the state the AP fixes are computed from.

    state: "classes" (category ids in AP, ordered), "gt" / "fn" ({class: non-crowd gt /
    unmatched gt}), "points" ({class: [(seq, score, correct)]} of counted detections, in
    processing order), "errors" (records, see `error_breakdown`).
    """
    anns, dets = collections.defaultdict(list), collections.defaultdict(list)
    for i, ann in enumerate(gt["annotations"]):
        anns[ann["image_id"]].append({"class": ann["category_id"], "bbox": ann["bbox"], "index": i,
                                      "crowd": bool(ann.get("iscrowd", 0))})
    for i, det in enumerate(detections):
        dets[det["image_id"]].append({"class": det["category_id"], "score": det["score"],
                                      "bbox": det["bbox"], "index": i})
    state = {"classes": {}, "gt": collections.Counter(), "fn": collections.Counter(),
             "points": collections.defaultdict(list), "errors": [], "seq": 0}
    for image_id in dict.fromkeys(image["id"] for image in gt["images"]):
        objects = [a for a in anns[image_id] if not a["crowd"]]
        for ann in objects:
            state["gt"][ann["class"]] += 1
            state["classes"].setdefault(ann["class"])
        if not dets[image_id]:
            ranked, matched, ignored = [], np.zeros(0, int), np.zeros(0, bool)
            errors = [{"type": "Miss", "gt": g} for g in range(len(objects))]
        else:
            ranked, matched, ignored, errors = _image_errors(
                dets[image_id], objects, [a for a in anns[image_id] if a["crowd"]], thresholds, max_dets)
        _add_image(state, image_id, ranked, matched, ignored, errors, objects)
    return state


def _add_image(state, image_id, ranked, matched, ignored, errors, objects):
    """Append one image's counted detections, unmatched gt counts and error records."""
    for rank, det in enumerate(ranked):
        if not ignored[rank]:
            state["seq"] += 1  # processing order: the tie-break of equal scores in tidecv's AP
            state["points"][det["class"]].append((state["seq"], det["score"], bool(matched[rank] >= 0)))
            state["classes"].setdefault(det["class"])
    used = set(int(g) for g in matched[matched >= 0])
    for g, ann in enumerate(objects):
        if g not in used:
            state["fn"][ann["class"]] += 1
    for error in errors:
        record = {"type": error["type"], "image_id": image_id}
        if error["type"] == "Miss":
            ann = objects[error["gt"]]
            record.update({"class": ann["class"], "gt_index": ann["index"], "bbox": list(ann["bbox"]),
                           "area": float(ann["bbox"][2]) * float(ann["bbox"][3])})
        else:
            det = ranked[error["det"]]
            target = error.get("target")
            record.update({"class": det["class"], "score": det["score"], "bbox": list(det["bbox"]),
                           "det_index": det["index"], "ignored": bool(ignored[error["det"]]),
                           "fixable": error.get("fixable", False),
                           "gt_index": None if target is None else objects[target]["index"],
                           "fix_class": det["class"] if target is None or error["type"] == "Loc"
                           else objects[target]["class"]})
        state["errors"].append(record)


def _fixed(state, fix=(), perfect_precision=False, perfect_recall=False):
    """({class: [(score, correct)]}, {class: gt count}) after a fix, in tidecv's order
    (error data points first, then the true positives)."""
    points, gt = collections.defaultdict(list), dict(state["gt"])
    for error in state["errors"]:
        if error["type"] in fix:
            if error["type"] == "Miss":
                gt[error["class"]] -= 1
            elif error["type"] in ("Cls", "Loc") and error["fixable"]:
                points[error["fix_class"]].append((error["score"], True))
        elif error["type"] != "Miss" and not error["ignored"]:
            points[error["class"]].append((error["score"], False))
    for cls in state["classes"]:
        points[cls].extend((score, True) for _, score, ok in state["points"][cls] if ok)
        if perfect_recall:
            gt[cls] = gt.get(cls, 0) - state["fn"][cls]
    if perfect_precision:
        points = {cls: [(1.0 if ok else 0.0, ok) for _, ok in pts] for cls, pts in points.items()}
    return points, gt


def _rounded(value):
    return None if value is None else round(float(value), 6)


def error_breakdown(gt, detections, pos_threshold=0.5, bg_threshold=0.1, max_dets=100):
    """TIDE error breakdown of COCO results against a COCO gt dict (see the module docstring).

    Returns the errors.json dict:
      "AP50": mAP at IoU `pos_threshold` as TIDE computes it (0-1);
      "dAP": {type: AP gained by fixing every error of that type} for MAIN_ERRORS;
      "FalsePos", "FalseNeg": the special errors; "counts": {type: number of errors};
      "per_class": {name: {"AP50", "dAP", "FalsePos", "FalseNeg", "counts"}}, ascending
          category id; the AP values of a class are null when it has neither gt nor
          counted detections (or for dAP, when the fix leaves it with neither);
      "settings": the thresholds and max_dets;
      "_errors": one record per error for the galleries (writers drop "_" keys):
          {"type", "image_id", "class" (category id), "bbox" xywh, "gt_index" (index in
          gt["annotations"] of the missed / targeted gt or None), and for detection errors
          "score", "det_index" (index in `detections`), "ignored", "fixable", "fix_class";
          for Miss "area" (w * h)}.
    Raises DetectError for malformed input.
    """
    check_ground_truth(gt)
    plain = check_detections(gt, detections)
    state = _collect(gt, plain, (pos_threshold, bg_threshold), max_dets)
    classes = list(state["classes"])
    merged = {cls: [(s, ok) for _, s, ok in sorted(pts)] for cls, pts in state["points"].items()}
    base, base_aps = _class_aps(classes, merged, state["gt"])
    runs = {kind: _class_aps(classes, *_fixed(state, fix={kind})) for kind in MAIN_ERRORS}
    runs["FalsePos"] = _class_aps(classes, *_fixed(state, perfect_precision=True))
    runs["FalseNeg"] = _class_aps(classes, *_fixed(state, perfect_recall=True))

    def delta(kind, after, before):
        if after is None or before is None:
            return None
        return after - before if kind in SPECIAL_ERRORS else max(after - before, 0.0)

    counts = collections.Counter(e["type"] for e in state["errors"])
    result = {"AP50": _rounded(base),
              "dAP": {k: _rounded(delta(k, runs[k][0], base)) for k in MAIN_ERRORS},
              **{k: _rounded(delta(k, runs[k][0], base)) for k in SPECIAL_ERRORS},
              "counts": {k: counts.get(k, 0) for k in MAIN_ERRORS},
              "per_class": {},
              "settings": {"pos_threshold": pos_threshold, "bg_threshold": bg_threshold,
                           "max_dets": max_dets, "ap": "COCO 101-point"}}
    cat_ids = sorted(c["id"] for c in gt["categories"])
    for cat_id, name in zip(cat_ids, category_names(gt)):
        before = base_aps.get(cat_id)
        per = {k: _rounded(delta(k, runs[k][1].get(cat_id), before)) for k in (*MAIN_ERRORS, *SPECIAL_ERRORS)}
        class_counts = collections.Counter(e["type"] for e in state["errors"] if e["class"] == cat_id)
        result["per_class"][name] = {"AP50": _rounded(before), "dAP": {k: per[k] for k in MAIN_ERRORS},
                                     "FalsePos": per["FalsePos"], "FalseNeg": per["FalseNeg"],
                                     "counts": {k: class_counts.get(k, 0) for k in MAIN_ERRORS}}
    result["_errors"] = state["errors"]
    return result
