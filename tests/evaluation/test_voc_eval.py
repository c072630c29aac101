import numpy as np
import pytest

from detect.errors import DetectError
from detect.evaluation.voc_eval import voc_ap, voc_evaluate
from detect.ops.boxes import pairwise_iou_np

CATS = [{"id": 3, "name": "cat"}, {"id": 8, "name": "dog"}, {"id": 9, "name": "bird"}]


def _gt(annotations, categories=CATS):
    return {
        "images": [{"id": i, "width": 100, "height": 100} for i in (1, 2, 3)],
        "categories": categories,
        "annotations": [dict(id=i + 1, **a) for i, a in enumerate(annotations)],
    }


def _det(image_id, category_id, bbox, score):
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score}


def test_iou_uses_continuous_areas():
    # [0, 0, 10, 10] vs [5, 0, 15, 10]: intersection 5 * 10 = 50, union 100 + 100 - 50 = 150.
    boxes = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [3, 3, 3, 3]], dtype=float)
    np.testing.assert_allclose(pairwise_iou_np(np.array([[0, 0, 10, 10.0]]), boxes)[0], [1 / 3, 0, 0])


def test_voc_ap_on_a_ranked_list():
    # rank   recall  precision
    #  1      0.25     1.0
    #  2      0.25     0.5
    #  3      0.50     2/3
    #  4      0.75     0.75
    # All-point: envelope = 1.0 up to recall 0.25, then 0.75 up to 0.75, 0 after:
    #   0.25 * 1.0 + 0.25 * 0.75 + 0.25 * 0.75 = 0.625.
    # 11-point: t = 0, .1, .2 -> 1.0; t = .3 .. .7 -> 0.75 (best at recall >= t);
    #   t = .8, .9, 1.0 -> 0 (recall never reaches .8): (3 * 1 + 5 * 0.75) / 11 = 6.75 / 11.
    recall = [0.25, 0.25, 0.5, 0.75]
    precision = [1.0, 0.5, 2 / 3, 0.75]
    assert voc_ap(recall, precision, use_07_metric=False) == pytest.approx(0.625)
    assert voc_ap(recall, precision, use_07_metric=True) == pytest.approx(6.75 / 11)


def test_voc_ap_11_point_counts_recall_of_exactly_three_tenths():
    # Recall 3/10 with precision 1: t = 0, .1, .2, .3 reach it -> 4 / 11.
    assert voc_ap([0.1, 0.2, 0.3], [1.0, 1.0, 1.0], use_07_metric=True) == pytest.approx(4 / 11)


def test_voc_ap_empty_is_zero():
    assert voc_ap([], [], use_07_metric=False) == 0.0
    assert voc_ap([], [], use_07_metric=True) == 0.0


def test_hand_case_with_difficult_and_duplicate():
    # cat gts: A img1 [0,0,10,10]; B img1 [20,0,10,10] difficult; C img2 [0,0,10,10];
    #          D img3 [0,0,20,20]  -> npos = 3 (B not counted).
    # cat detections by score:
    #   d1 .9 img1 [0,0,10,10]  IoU(A) = 1                            -> TP
    #   d2 .8 img1 [1,0,10,10]  IoU(A) = 90 / (100 + 100 - 90) = .82, A taken -> FP (duplicate)
    #   d3 .7 img1 [20,0,10,10] matches difficult B                    -> ignored (tp 0, fp 0)
    #   d4 .6 img2 [5,5,10,10]  IoU(C) = 25 / 175 = .14               -> FP
    #   d5 .5 img3 [0,0,20,20]  IoU(D) = 1                            -> TP
    #   d6 .4 img2 [0,0,10,10]  IoU(C) = 1                            -> TP
    # rank  cum tp  cum fp  recall  precision
    #  1      1       0      1/3      1
    #  2      1       1      1/3      1/2
    #  3      1       1      1/3      1/2
    #  4      1       2      1/3      1/3
    #  5      2       2      2/3      1/2
    #  6      3       2      1        3/5
    # All-point: envelope 1 on (0, 1/3], 3/5 on (1/3, 1] -> 1/3 * 1 + 2/3 * 3/5 = 11/15.
    # 11-point: t = 0 .. .3 -> 1; t = .4 .. 1.0 (7 points) -> 3/5 -> (4 + 4.2) / 11 = 8.2 / 11.
    # bird: one gt, one exact detection -> AP = AP07 = 1.
    # dog: a detection but no gt -> absent, not in the mean.
    annotations = [
        {"image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 10]},
        {"image_id": 1, "category_id": 3, "bbox": [20, 0, 10, 10], "difficult": 1},
        {"image_id": 2, "category_id": 3, "bbox": [0, 0, 10, 10]},
        {"image_id": 3, "category_id": 3, "bbox": [0, 0, 20, 20]},
        {"image_id": 1, "category_id": 9, "bbox": [50, 50, 10, 10]},
    ]
    dets = [
        _det(2, 3, [5, 5, 10, 10], 0.6), _det(1, 3, [1, 0, 10, 10], 0.8),
        _det(3, 3, [0, 0, 20, 20], 0.5), _det(1, 3, [0, 0, 10, 10], 0.9),
        _det(2, 3, [0, 0, 10, 10], 0.4), _det(1, 3, [20, 0, 10, 10], 0.7),
        _det(1, 9, [50, 50, 10, 10], 0.9), _det(1, 8, [0, 0, 10, 10], 0.9),
    ]
    result = voc_evaluate(_gt(annotations), dets)
    assert result["per_class"]["cat"]["AP"] == pytest.approx(11 / 15)
    assert result["per_class"]["cat"]["AP07"] == pytest.approx(8.2 / 11)
    assert result["per_class"]["bird"] == {"AP": pytest.approx(1.0), "AP07": pytest.approx(1.0)}
    assert result["per_class"]["dog"] == {"AP": None, "AP07": None}
    assert result["mAP50"] == pytest.approx((11 / 15 + 1) / 2)
    assert result["mAP50_07"] == pytest.approx((8.2 / 11 + 1) / 2)


def test_iou_of_exactly_the_threshold_is_a_false_positive():
    # [0,0,10,10] vs [0,0,10,5]: IoU = 50 / 100 = 0.5, not > 0.5 -> FP, AP 0.
    gt = _gt([{"image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 10]}])
    result = voc_evaluate(gt, [_det(1, 3, [0, 0, 10, 5], 0.9)])
    assert result["per_class"]["cat"]["AP"] == 0.0
    # With a lower threshold the same detection is a TP.
    assert voc_evaluate(gt, [_det(1, 3, [0, 0, 10, 5], 0.9)], iou_threshold=0.4)["mAP50"] == 1.0


def test_crowd_gt_is_ignored_like_difficult():
    # The 0.9 detection hits the crowd box (neither TP nor FP), the 0.8 one finds the
    # only counted gt: precision at recall 1 is 1/1 -> AP 1. Counted as an FP instead
    # it would give 1/2.
    gt = _gt([{"image_id": 1, "category_id": 3, "bbox": [0, 0, 50, 50], "iscrowd": 1},
              {"image_id": 2, "category_id": 3, "bbox": [0, 0, 10, 10]}])
    dets = [_det(1, 3, [0, 0, 50, 50], 0.9), _det(2, 3, [0, 0, 10, 10], 0.8)]
    assert voc_evaluate(gt, dets)["per_class"]["cat"]["AP"] == pytest.approx(1.0)


def test_no_detections_and_no_gt():
    gt = _gt([{"image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 10]}])
    result = voc_evaluate(gt, [])
    assert result["mAP50"] == 0.0 and result["mAP50_07"] == 0.0
    empty = voc_evaluate(_gt([]), [_det(1, 3, [0, 0, 10, 10], 0.9)])
    assert empty["mAP50"] is None and empty["per_class"]["cat"]["AP"] is None


def test_unknown_image_id_raises():
    gt = _gt([{"image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 10]}])
    with pytest.raises(DetectError, match="image_id 77"):
        voc_evaluate(gt, [_det(77, 3, [0, 0, 10, 10], 0.9)])
