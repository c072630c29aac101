import contextlib
import io
import json

import pytest
from error_cases import tide_case

from detect.errors import DetectError
from detect.evaluation.errors import MAIN_ERRORS, error_breakdown


def _case(anns, dets, num_images=1):
    """COCO gt with one class "a" (id 4) from (image_id, xywh) and results from (image_id, xywh, score)."""
    return (
        {"images": [{"id": i} for i in range(1, num_images + 1)],
         "categories": [{"id": 4, "name": "a"}],
         "annotations": [{"id": n + 1, "image_id": i, "category_id": 4, "bbox": b, "iscrowd": 0}
                         for n, (i, b) in enumerate(anns)]},
        [{"image_id": i, "category_id": 4, "bbox": b, "score": s} for i, b, s in dets],
    )


def test_hand_made_images_get_the_error_types_in_their_comments():
    gt, dets = tide_case(num_random=0)
    result = error_breakdown(gt, dets)
    # One record per error: detection errors in image order and score order, then Miss.
    found = [(e["image_id"], e["type"], e.get("score")) for e in result["_errors"]]
    assert found == [(1, "Dupe", 0.90), (1, "Cls", 0.85), (2, "Cls", 0.85), (2, "Loc", 0.80),
                     (2, "Bkg", 0.70), (2, "Miss", None), (3, "Both", 0.75), (3, "Miss", None),
                     (4, "Bkg", 0.65)]
    # Triangle D is missed too: a Both error does not claim its gt (only Loc and Cls do).
    assert result["counts"] == {"Cls": 2, "Loc": 1, "Both": 1, "Dupe": 1, "Bkg": 2, "Miss": 2}
    taken, free = result["_errors"][1], result["_errors"][2]
    # Fixed, the triangle on the free circle E becomes a circle true positive; the square
    # on circle A cannot (A is already matched), so the fix removes it.
    assert free["fixable"] and free["class"] == 9 and free["fix_class"] == 3
    assert gt["annotations"][free["gt_index"]]["bbox"] == [10, 60, 30, 30]
    assert not taken["fixable"] and taken["fix_class"] == 3
    assert result["_errors"][5]["area"] == 30 * 30
    assert list(result["per_class"]) == ["circle", "square", "triangle"]  # ascending ids 3, 7, 9


def test_background_error_above_a_true_positive_and_a_miss_hand_computed():
    # Two gt; ranked detections: FP (0.95, touches nothing), TP (0.9); the second gt is missed.
    gt, dets = _case([(1, [0, 0, 10, 10]), (1, [50, 50, 10, 10])],
                     [(1, [80, 80, 10, 10], 0.95), (1, [0, 0, 10, 10], 0.9)])
    result = error_breakdown(gt, dets)
    # precision [0, 1/2] -> envelope [1/2, 1/2]; recall [0, 1/2]: the 51 points 0..0.50 read 1/2.
    ap = 51 * 0.5 / 101
    assert result["AP50"] == pytest.approx(ap, abs=1e-6)
    # Without the FP: precision 1 up to recall 1/2 -> 51/101.
    assert result["dAP"]["Bkg"] == pytest.approx(51 / 101 - ap, abs=1e-6)
    assert result["FalsePos"] == pytest.approx(51 / 101 - ap, abs=1e-6)
    # Without the missed gt: one gt, recall [0, 1] at precision 1/2 -> 0.5 everywhere.
    assert result["dAP"]["Miss"] == pytest.approx(0.5 - ap, abs=1e-6)
    assert result["FalseNeg"] == pytest.approx(0.5 - ap, abs=1e-6)
    for kind in ("Cls", "Loc", "Both", "Dupe"):
        assert result["dAP"][kind] == 0.0
    assert result["per_class"]["a"]["dAP"]["Miss"] == result["dAP"]["Miss"]


def test_fixing_a_localization_error_makes_it_a_true_positive():
    # gt [0,0,10,10]; detection [5,0,10,10]: IoU 50/150 = 1/3, in [0.1, 0.5]: Loc.
    gt, dets = _case([(1, [0, 0, 10, 10])], [(1, [5, 0, 10, 10], 0.8)])
    result = error_breakdown(gt, dets)
    assert result["counts"]["Loc"] == 1 and result["counts"]["Miss"] == 0
    assert result["AP50"] == 0.0 and result["dAP"]["Loc"] == pytest.approx(1.0)


def test_no_detections_and_empty_ground_truth():
    gt, _ = _case([(1, [0, 0, 10, 10]), (2, [5, 5, 10, 10])], [], num_images=2)
    result = error_breakdown(gt, [])
    assert result["AP50"] == 0.0 and result["counts"]["Miss"] == 2
    assert all(v == 0.0 for v in result["dAP"].values())
    empty, _ = _case([], [], num_images=1)
    result = error_breakdown(empty, [])
    assert result["AP50"] == 0.0 and result["per_class"]["a"]["AP50"] is None
    assert sum(result["counts"].values()) == 0


def test_bad_detections_raise_detect_error():
    gt, dets = _case([(1, [0, 0, 10, 10])], [(1, [0, 0, 10, 10], 0.5)])
    with pytest.raises(DetectError, match=r"detections\[0\]: image_id 7"):
        error_breakdown(gt, [dict(dets[0], image_id=7)])


def _tidecv_errors(tidecv, gt_path, det_path):
    tide = tidecv.TIDE()
    run = tide.evaluate(tidecv.datasets.COCO(gt_path), tidecv.datasets.COCOResult(det_path),
                        mode=tidecv.TIDE.BOX)
    with contextlib.redirect_stdout(io.StringIO()):
        errors = tide.get_all_errors()
    main = {k: v / 100 for k, v in next(iter(errors["main"].values())).items()}
    special = {k: v / 100 for k, v in next(iter(errors["special"].values())).items()}
    return tide, run, main, special


@pytest.mark.parametrize("seed", [0, 1])
def test_errors_json_equals_tidecv_on_the_same_files(tmp_path, seed):
    tidecv = pytest.importorskip(
        "tidecv", reason="needs tidecv, a test-only dependency (installed with --no-deps): make install-test")
    import cv2

    assert hasattr(cv2, "ximgproc"), "tidecv pulled in opencv-python, which shadows opencv-contrib"
    gt, dets = tide_case(seed)
    gt_path, det_path = tmp_path / "gt.json", tmp_path / "dets.json"
    gt_path.write_text(json.dumps(gt))
    det_path.write_text(json.dumps(dets))
    ours = error_breakdown(gt, dets)
    assert all(ours["counts"][k] > 0 for k in MAIN_ERRORS), ours["counts"]
    assert any(e.get("ignored") for e in ours["_errors"])  # a detection inside a crowd box
    tide, run, main, special = _tidecv_errors(tidecv, str(gt_path), str(det_path))

    assert ours["AP50"] == pytest.approx(run.ap / 100, abs=0.005)
    for kind in MAIN_ERRORS:
        assert ours["dAP"][kind] == pytest.approx(main[kind], abs=0.005), kind
    for kind in ("FalsePos", "FalseNeg"):
        assert ours[kind] == pytest.approx(special[kind], abs=0.005), kind
    assert ours["counts"] == {k.short_name: v for k, v in run.count_errors().items()}
    assert ours["dAP"]["Loc"] > 0.05 and ours["dAP"]["Miss"] > 0.05  # nontrivial numbers

    # Per class: the class's AP after tidecv fixes one error type.
    names = {c["id"]: c["name"] for c in gt["categories"]}
    for error_type in tidecv.TIDE._error_types:
        fixed = run.fix_errors(lambda e, t=error_type: isinstance(e, t))
        for cat_id, name in names.items():
            before = run.ap_data.objs[cat_id].get_ap() / 100
            expected = max(fixed.objs[cat_id].get_ap() / 100 - before, 0)
            got = ours["per_class"][name]["dAP"][error_type.short_name]
            assert got == pytest.approx(expected, abs=0.005), (name, error_type.short_name)
