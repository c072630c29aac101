import contextlib
import io
import logging

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detect.errors import DetectError
from detect.evaluation.coco_eval import STAT_NAMES, category_names, coco_evaluate


def _gt(annotations, categories=((2, "cat"), (5, "dog"))):
    return {
        "images": [{"id": i, "width": 100, "height": 100, "file_name": f"{i}.jpg"} for i in (1, 2, 3)],
        "categories": [{"id": c, "name": n} for c, n in categories],
        "annotations": [dict(id=i + 1, area=a["bbox"][2] * a["bbox"][3], iscrowd=0, **a)
                        for i, a in enumerate(annotations)],
    }


def _det(image_id, category_id, bbox, score):
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score}


def _direct_pycocotools(gt, detections):
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes([dict(d) for d in detections]), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def test_category_names_follow_ascending_ids():
    gt = _gt([], categories=((11, "c"), (2, "a"), (5, "b")))
    assert category_names(gt) == ["a", "b", "c"]


def test_false_positive_ranked_first_halves_ap():
    # dog: one gt, detections ranked FP (0.9) then exact TP (0.8).
    # At recall 1 precision is 1/2; the interpolated envelope is 0.5 at all 101 recall
    # points and at every IoU threshold (the TP is exact) -> AP = AP50 = 0.5.
    # cat: one exact detection -> AP 1.0.
    gt = _gt([{"image_id": 1, "category_id": 2, "bbox": [10, 10, 40, 40]},
              {"image_id": 2, "category_id": 5, "bbox": [20, 20, 50, 30]}])
    dets = [_det(1, 2, [10, 10, 40, 40], 0.7),
            _det(3, 5, [0, 0, 30, 30], 0.9),
            _det(2, 5, [20, 20, 50, 30], 0.8)]
    result = coco_evaluate(gt, dets)
    assert result["per_class"] == pytest.approx({"cat": 1.0, "dog": 0.5})
    assert result["per_class_AP50"] == pytest.approx({"cat": 1.0, "dog": 0.5})
    assert result["coco"]["AP"] == pytest.approx(0.75)
    assert result["gt_count"] == {"cat": 1, "dog": 1}
    assert result["det_count"] == {"cat": 1, "dog": 2}
    assert result["_precision"].shape == (10, 101, 2, 4, 3)
    assert list(result["coco"]) == list(STAT_NAMES)
    assert all(type(v) is float for v in result["coco"].values())


def test_agrees_with_pycocotools_with_crowd_and_partial_overlaps():
    gt = _gt([{"image_id": 1, "category_id": 2, "bbox": [10, 10, 40, 40]},
              {"image_id": 1, "category_id": 5, "bbox": [50, 50, 45, 30]},
              {"image_id": 2, "category_id": 2, "bbox": [0, 0, 90, 90]},
              {"image_id": 2, "category_id": 5, "bbox": [5, 60, 20, 20]},
              {"image_id": 3, "category_id": 2, "bbox": [30, 30, 8, 8]}])
    gt["annotations"][2]["iscrowd"] = 1
    dets = [_det(1, 2, [12, 8, 38, 44], 0.9), _det(1, 2, [11, 10, 40, 40], 0.4),
            _det(1, 5, [55, 52, 40, 30], 0.8), _det(2, 2, [20, 20, 30, 30], 0.95),
            _det(2, 5, [6, 58, 20, 24], 0.3), _det(3, 2, [31, 29, 8, 9], 0.6),
            _det(3, 5, [30, 30, 8, 8], 0.7)]
    result = coco_evaluate(gt, dets)
    direct = _direct_pycocotools(gt, dets)
    for name, value in zip(STAT_NAMES, direct.stats):
        assert result["coco"][name] == pytest.approx(value, abs=1e-12), name
    np.testing.assert_array_equal(result["_precision"], direct.eval["precision"])
    # The crowd box is not a gt to find: gt_count counts 2 cats, 2 dogs.
    assert result["gt_count"] == {"cat": 2, "dog": 2}
    assert 0.0 < result["coco"]["AP"] < 1.0


def test_gt_annotation_id_zero_still_counts_a_match():
    # pycocotools stores the matched gt id as the match flag, so id 0 would read as
    # "unmatched"; ids are renumbered so the exact detection gives AP 1.
    gt = _gt([{"image_id": 1, "category_id": 2, "bbox": [10, 10, 40, 40]}])
    gt["annotations"][0]["id"] = 0
    result = coco_evaluate(gt, [_det(1, 2, [10, 10, 40, 40], 0.9)])
    assert result["per_class"]["cat"] == pytest.approx(1.0)
    assert gt["annotations"][0]["id"] == 0  # the caller's dict is not modified


def test_missing_area_is_taken_from_box():
    gt = _gt([{"image_id": 1, "category_id": 2, "bbox": [10, 10, 20, 20]}])
    del gt["annotations"][0]["area"]
    result = coco_evaluate(gt, [_det(1, 2, [10, 10, 20, 20], 0.9)])
    # 20 * 20 = 400 < 32 ** 2: the box is small, so APs is 1 and APm / APl have no gt.
    assert result["coco"]["APs"] == pytest.approx(1.0)
    assert result["coco"]["APm"] == -1.0


def test_empty_detections_give_zero_with_warning(caplog):
    gt = _gt([{"image_id": 1, "category_id": 2, "bbox": [10, 10, 40, 40]}])
    with caplog.at_level(logging.WARNING):
        result = coco_evaluate(gt, [])
    assert result["coco"] == {name: 0.0 for name in STAT_NAMES}
    assert result["per_class"] == {"cat": 0.0, "dog": None}
    assert result["det_count"] == {"cat": 0, "dog": 0}
    assert "no detections" in caplog.text


def test_class_without_gt_is_absent_not_zero(caplog):
    gt = _gt([{"image_id": 1, "category_id": 2, "bbox": [10, 10, 40, 40]}])
    dets = [_det(1, 2, [10, 10, 40, 40], 0.9), _det(2, 5, [10, 10, 40, 40], 0.9)]
    with caplog.at_level(logging.WARNING):
        result = coco_evaluate(gt, dets)
    assert result["per_class"] == {"cat": pytest.approx(1.0), "dog": None}
    assert result["per_class_AP50"]["dog"] is None
    # The absent class does not pull the mean down.
    assert result["coco"]["AP"] == pytest.approx(1.0)
    assert "without ground truth" in caplog.text and "dog" in caplog.text


def test_numpy_values_are_accepted():
    gt = _gt([{"image_id": 1, "category_id": 2, "bbox": [10, 10, 40, 40]}])
    det = _det(np.int64(1), np.int32(2), np.array([10, 10, 40, 40], np.float32), np.float32(0.5))
    assert coco_evaluate(gt, [det])["per_class"]["cat"] == pytest.approx(1.0)


@pytest.mark.parametrize("det, message", [
    (_det(42, 2, [0, 0, 5, 5], 0.5), "image_id 42"),
    (_det(1, 7, [0, 0, 5, 5], 0.5), "category_id 7"),
    ({"image_id": 1, "category_id": 2, "bbox": [0, 0, 5, 5]}, "detections[1]: missing key 'score'"),
    (_det(1, 2, [0, 0, 5], 0.5), "detections[1]: bbox"),
    (_det(1, 2, [0, 0, -5, 5], 0.5), "detections[1]: bbox"),
    (_det(1, 2, [0, 0, 5, 5], float("nan")), "detections[1]: score"),
    ("not a dict", "detections[1]"),
])
def test_bad_detections_raise_detect_error_naming_the_culprit(det, message):
    gt = _gt([{"image_id": 1, "category_id": 2, "bbox": [10, 10, 40, 40]}])
    with pytest.raises(DetectError, match=message.replace("[", r"\[").replace("]", r"\]")):
        coco_evaluate(gt, [_det(1, 2, [10, 10, 40, 40], 0.9), det])


def test_bad_ground_truth_raises_detect_error():
    gt = _gt([{"image_id": 9, "category_id": 2, "bbox": [10, 10, 40, 40]}])
    with pytest.raises(DetectError, match=r"annotation id 1 \(entry 0\): image_id 9"):
        coco_evaluate(gt, [])
    with pytest.raises(DetectError, match="missing list 'categories'"):
        coco_evaluate({"images": [], "annotations": []}, [])
