import contextlib
import io
import json
import logging
import os

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detect.errors import DetectError
from detect.evaluation.coco_eval import STAT_NAMES, coco_evaluate
from detect.evaluation.plots import confusion_matrix, plot_confusion_matrix, plot_pr_curves
from detect.evaluation.report import evaluate_detections, evaluate_files, format_table

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CATEGORIES = [{"id": 11, "name": "triangle"}, {"id": 2, "name": "circle"}, {"id": 5, "name": "square"}]


def _random_case(seed=0, num_images=8, width=320, height=240):
    """COCO gt with crowd boxes, varied areas and an image without gt, plus detections
    jittered from the gt (some with the wrong class) and random false positives."""
    rng = np.random.default_rng(seed)
    cat_ids = [c["id"] for c in CATEGORIES]
    images, annotations, detections = [], [], []

    def random_box(lo, hi):
        w, h = rng.uniform(lo, hi, size=2)
        return [float(rng.uniform(0, width - w)), float(rng.uniform(0, height - h)), float(w), float(h)]

    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "width": width, "height": height, "file_name": f"{image_id}.jpg"})
        num_gt = 0 if image_id == 4 else int(rng.integers(2, 6))
        for _ in range(num_gt):
            crowd = rng.random() < 0.15
            bbox = random_box(60, 150) if crowd else random_box(8, 160)
            cat = int(rng.choice(cat_ids))
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cat,
                                "bbox": bbox, "area": bbox[2] * bbox[3] * float(rng.uniform(0.6, 1.0)),
                                "iscrowd": int(crowd)})
            if crowd or rng.random() > 0.85:
                continue
            for _ in range(int(rng.integers(1, 3))):
                x, y, w, h = bbox
                jitter = rng.normal(0, 0.12, size=4) * [w, h, w, h]
                det_cat = cat if rng.random() < 0.85 else int(rng.choice(cat_ids))
                detections.append({"image_id": image_id, "category_id": det_cat,
                                   "bbox": [x + jitter[0], y + jitter[1], max(1.0, w + jitter[2]),
                                            max(1.0, h + jitter[3])],
                                   "score": float(rng.random())})
        for _ in range(int(rng.integers(0, 3))):
            detections.append({"image_id": image_id, "category_id": int(rng.choice(cat_ids)),
                               "bbox": random_box(8, 100), "score": float(rng.random() * 0.6)})
    detections = [dict(d, bbox=[float(v) for v in d["bbox"]]) for d in detections]
    return {"images": images, "annotations": annotations, "categories": CATEGORIES}, detections


def _write(path, data):
    with open(path, "w") as f:
        json.dump(data, f)
    return str(path)


def _pycocotools_on_files(gt_path, det_path):
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(gt_path)
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(det_path), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def test_metrics_json_agrees_with_pycocotools_on_the_same_files(tmp_path):
    gt, dets = _random_case()
    assert any(a["iscrowd"] for a in gt["annotations"])
    assert {a["category_id"] for a in gt["annotations"]} == {2, 5, 11}
    gt_path = _write(tmp_path / "gt.json", gt)
    det_path = _write(tmp_path / "dets.json", dets)
    out = tmp_path / "eval"
    evaluate_files(det_path, gt_path, str(out))
    metrics = json.loads((out / "metrics.json").read_text())

    direct = _pycocotools_on_files(gt_path, str(out / "detections.json"))
    assert 0.1 < direct.stats[0] < 0.9  # a nontrivial case, not all-or-nothing
    for name, value in zip(STAT_NAMES, direct.stats):
        assert abs(metrics["coco"][name] - value) <= 1e-9, name
    # K axis = ascending category ids 2, 5, 11 = circle, square, triangle.
    precision = direct.eval["precision"]
    for k, name in enumerate(["circle", "square", "triangle"]):
        ap = precision[:, :, k, 0, -1]
        ap50 = precision[0, :, k, 0, -1]
        assert abs(metrics["per_class"][name] - ap[ap > -1].mean()) <= 1e-9
        assert abs(metrics["per_class_AP50"][name] - ap50[ap50 > -1].mean()) <= 1e-9
    assert metrics["num_images"] == 8
    assert set(metrics["voc"]) == {"mAP50", "mAP50_07", "per_class"}
    assert json.loads((out / "detections.json").read_text()) == dets
    # No images given: no galleries folder.
    assert sorted(os.listdir(out)) == ["confusion_matrix.png", "detections.json", "errors.json", "errors.png",
                                       "metrics.json", "pr_curves.png", "report.html"]
    for png in ("pr_curves.png", "confusion_matrix.png", "errors.png"):
        data = (out / png).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000


def test_evaluate_detections_returns_what_it_writes_with_extra(tmp_path):
    gt, dets = _random_case(seed=1, num_images=4)
    dets[0] = dict(dets[0], score=np.float32(0.5), image_id=np.int64(dets[0]["image_id"]))
    metrics = evaluate_detections(gt, dets, str(tmp_path), extra={"seconds_per_image": 0.25})
    written = json.loads((tmp_path / "detections.json").read_text())
    assert written[0]["score"] == 0.5 and written[1:] == dets[1:]
    assert metrics["seconds_per_image"] == 0.25
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert not any(key.startswith("_") for key in metrics)
    with pytest.raises(ValueError, match="coco"):
        evaluate_detections(gt, dets, str(tmp_path), extra={"coco": 1})


def test_model_that_predicts_nothing_gives_ap_zero(tmp_path, caplog):
    gt, _ = _random_case(seed=2, num_images=3)
    with caplog.at_level(logging.WARNING):
        metrics = evaluate_files(_write(tmp_path / "dets.json", []), _write(tmp_path / "gt.json", gt),
                                 str(tmp_path / "out"))
    assert metrics["coco"]["AP"] == 0.0 and metrics["voc"]["mAP50"] == 0.0
    assert "no detections" in caplog.text
    assert (tmp_path / "out" / "pr_curves.png").read_bytes().startswith(PNG_MAGIC)


def test_evaluate_files_errors_name_the_file(tmp_path):
    gt, dets = _random_case(seed=3, num_images=2)
    gt_path = _write(tmp_path / "gt.json", gt)
    det_path = _write(tmp_path / "dets.json", dets)
    out = str(tmp_path / "out")
    with pytest.raises(DetectError, match="nothere.json"):
        evaluate_files(str(tmp_path / "nothere.json"), gt_path, out)
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [')
    with pytest.raises(DetectError, match="broken.json: invalid JSON"):
        evaluate_files(det_path, str(broken), out)
    with pytest.raises(DetectError, match=r"gt.json: expected a list"):
        evaluate_files(gt_path, gt_path, out)
    bad = _write(tmp_path / "bad.json", dets + [dict(dets[0], image_id=999)])
    with pytest.raises(DetectError, match=rf"bad.json\[{len(dets)}\]: image_id 999"):
        evaluate_files(bad, gt_path, out)
    assert not os.path.exists(out)


def _cm_gt():
    # Index 0 background, 1 "a" (id 2), 2 "b" (id 5).
    anns = [
        {"image_id": 1, "category_id": 2, "bbox": [0, 0, 10, 10]},
        {"image_id": 1, "category_id": 5, "bbox": [20, 0, 10, 10]},
        {"image_id": 2, "category_id": 5, "bbox": [0, 0, 10, 10]},
        {"image_id": 3, "category_id": 2, "bbox": [0, 0, 50, 50], "iscrowd": 1},
    ]
    return {"images": [{"id": i} for i in (1, 2, 3)],
            "categories": [{"id": 5, "name": "b"}, {"id": 2, "name": "a"}],
            "annotations": [dict(id=i + 1, **a) for i, a in enumerate(anns)]}


def test_confusion_matrix_hand_case():
    dets = [
        {"image_id": 1, "category_id": 2, "bbox": [0, 0, 10, 10], "score": 0.9},   # a on a
        {"image_id": 1, "category_id": 2, "bbox": [21, 0, 10, 10], "score": 0.8},  # a on b (IoU 90/110)
        {"image_id": 2, "category_id": 5, "bbox": [50, 50, 10, 10], "score": 0.9},  # b on nothing: FP
        {"image_id": 2, "category_id": 2, "bbox": [0, 0, 10, 10], "score": 0.3},   # below 0.5: dropped
        {"image_id": 3, "category_id": 2, "bbox": [10, 10, 10, 10], "score": 0.9},  # inside crowd: ignored
    ]
    # gt b of image 2 is found by no kept detection: missed (row b, column background).
    expected = np.array([
        # pred: bg  a  b
        [0, 0, 1],   # gt background (false positives)
        [0, 1, 0],   # gt a
        [1, 1, 0],   # gt b
    ])
    np.testing.assert_array_equal(confusion_matrix(_cm_gt(), dets), expected)
    # Lowering the score threshold keeps the 0.3 "a" detection, which finds gt b of image 2.
    expected[2, 0], expected[2, 1] = 0, 2
    np.testing.assert_array_equal(confusion_matrix(_cm_gt(), dets, score_threshold=0.2), expected)


def test_confusion_matrix_without_detections_counts_every_gt_as_missed():
    matrix = confusion_matrix(_cm_gt(), [])
    # Non-crowd gts: one "a", two "b"; the crowd "a" is not counted.
    np.testing.assert_array_equal(matrix, [[0, 0, 0], [1, 0, 0], [2, 0, 0]])


def test_plots_write_png_files(tmp_path):
    gt, dets = _random_case(seed=4, num_images=3)
    result = coco_evaluate(gt, dets)
    pr_path = tmp_path / "sub" / "pr.png"
    plot_pr_curves(result["_precision"], list(result["per_class"]), str(pr_path))
    cm_path = tmp_path / "cm.png"
    plot_confusion_matrix(confusion_matrix(gt, dets), list(result["per_class"]), str(cm_path))
    for path in (pr_path, cm_path):
        assert path.read_bytes().startswith(PNG_MAGIC) and path.stat().st_size > 1000
    assert sorted(os.listdir(tmp_path)) == ["cm.png", "sub"]  # no temp files left behind
    with pytest.raises(ValueError, match="matrix"):
        plot_confusion_matrix(np.zeros((2, 2)), ["a", "b"], str(cm_path))


def test_format_table_lists_classes_and_summary():
    metrics = {
        "per_class": {"circle": 0.5, "square": None},
        "per_class_AP50": {"circle": 0.75, "square": None},
        "gt_count": {"circle": 4, "square": 0},
        "det_count": {"circle": 6, "square": 2},
        "coco": dict.fromkeys(STAT_NAMES, 0.25),
        "voc": {"mAP50": 0.7, "mAP50_07": 0.69, "per_class": {}},
        "num_images": 3,
    }
    lines = format_table(metrics).splitlines()
    assert lines[0].split() == ["class", "AP", "AP50", "gt", "dets"]
    assert lines[1].split() == ["circle", "0.500", "0.750", "4", "6"]
    assert lines[2].split() == ["square", "-", "-", "0", "2"]
    assert "AP 0.250" in lines[3] and "VOC mAP50 0.700" in lines[3] and "images 3" in lines[3]
