"""Mask AP (iouType "segm") from `detect evaluate --detections` against pycocotools itself."""

import contextlib
import io
import json

import numpy as np
import pytest
from click.testing import CliRunner
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detect.cli import main
from detect.data.masks import encode
from detect.evaluation.coco_eval import STAT_NAMES, coco_evaluate
from detect.errors import DetectError


def _awkward(rng):
    """A gt and detections with crowd RLE (uncompressed, as COCO writes crowds), polygons,
    compressed RLE, images without gt, empty detection masks and a class without gt."""
    h, w = 40, 60
    images = [{"id": i, "file_name": f"{i}.jpg", "width": w, "height": h} for i in (1, 2, 3, 4)]
    crowd = np.zeros((h, w), np.uint8)
    crowd[20:38, 30:58] = 1
    flat = crowd.reshape(-1, order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    counts = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()  # starts with a zero run
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [2, 2, 20, 16], "area": 320, "iscrowd": 0,
         "segmentation": [[2, 2, 22, 2, 22, 18, 2, 18]]},
        {"id": 2, "image_id": 1, "category_id": 7, "bbox": [30, 20, 28, 18], "area": float(crowd.sum()),
         "iscrowd": 1, "segmentation": {"size": [h, w], "counts": counts}},
        {"id": 3, "image_id": 2, "category_id": 3, "bbox": [10, 5, 30, 30], "area": 700, "iscrowd": 0,
         "segmentation": encode(_disc(h, w, 25, 20, 14))},
        {"id": 4, "image_id": 2, "category_id": 7, "bbox": [40, 2, 12, 10], "area": 120, "iscrowd": 0,
         "segmentation": [[40, 2, 52, 2, 46, 12]]},
    ]  # images 3 and 4 have no gt
    categories = [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}, {"id": 9, "name": "c"}]
    gt = {"images": images, "annotations": annotations, "categories": categories}
    detections = []
    for image_id in (1, 2, 3, 4):
        for _ in range(6):
            x, y = rng.uniform(0, 40), rng.uniform(0, 25)
            bw, bh = rng.uniform(4, 20), rng.uniform(4, 15)
            mask = np.zeros((h, w), np.uint8)
            if rng.uniform() > 0.25:  # a quarter of the masks are empty
                mask[int(y):int(y + bh), int(x):int(x + bw)] = 1
            detections.append({"image_id": image_id, "category_id": int(rng.choice([3, 7, 9])),
                               "bbox": [round(x, 2), round(y, 2), round(bw, 2), round(bh, 2)],
                               "score": round(float(rng.uniform()), 4), "segmentation": encode(mask)})
    # Good masks on the objects, so the APs are not all 0.
    detections.append({"image_id": 1, "category_id": 3, "bbox": [2, 2, 20, 16], "score": 0.99,
                       "segmentation": encode(mask_utils.decode(
                           mask_utils.merge(mask_utils.frPyObjects([[2, 2, 22, 2, 22, 18, 2, 18]], h, w))))})
    detections.append({"image_id": 2, "category_id": 3, "bbox": [10, 5, 30, 30], "score": 0.9,
                       "segmentation": encode(_disc(h, w, 25, 21, 13))})
    detections.append({"image_id": 1, "category_id": 7, "bbox": [31, 21, 20, 15], "score": 0.95,
                       "segmentation": encode(crowd)})  # on the crowd region: ignored, not a false positive
    return gt, detections


def _disc(h, w, cx, cy, r):
    ys, xs = np.mgrid[0:h, 0:w]
    return (((xs + 0.5 - cx) ** 2 + (ys + 0.5 - cy) ** 2) <= r * r).astype(np.uint8)


def _pycocotools_segm(gt_path, detections_path):
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_path))
        results = json.loads(open(detections_path).read())
        for r in results:
            r.pop("bbox")  # a result with a bbox is read as a box by loadRes
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, "segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


def test_segm_ap_of_detect_evaluate_equals_pycocotools(tmp_path):
    gt, detections = _awkward(np.random.default_rng(0))
    gt_path, det_path = tmp_path / "gt.json", tmp_path / "dets.json"
    gt_path.write_text(json.dumps(gt))
    det_path.write_text(json.dumps(detections))
    out = tmp_path / "eval"
    result = CliRunner().invoke(main, ["evaluate", "--detections", str(det_path), "--annotations", str(gt_path),
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    expected = _pycocotools_segm(gt_path, det_path)
    assert list(metrics["segm"]) == list(STAT_NAMES) == list(metrics["coco"])
    np.testing.assert_allclose([metrics["segm"][k] for k in STAT_NAMES], expected, atol=1e-6)
    assert 0.3 < metrics["segm"]["AP"] < 1.0  # the test is not vacuous
    assert metrics["per_class_segm"]["c"] is None  # no gt of class c
    assert "mask AP" in result.output and "<th>mask</th>" in (out / "report.html").read_text()


def test_box_only_detections_have_no_segm_section(tmp_path):
    gt, detections = _awkward(np.random.default_rng(1))
    for d in detections:
        d.pop("segmentation")
    metrics = coco_evaluate(gt, detections)
    assert "coco" in metrics
    with pytest.raises(DetectError, match="have no segmentation"):
        coco_evaluate(gt, detections, iou_type="segm")
