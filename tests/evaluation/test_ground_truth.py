"""COCO datasets are scored against their own annotation file (its `area`, `iscrowd`, ids),
so APs / APm / APl equal pycocotools run directly on the file; other formats use the
rebuilt ground truth (area = box w x h)."""

import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detect.data.formats import load_dataset
from detect.errors import DetectError
from detect.evaluation.coco_eval import STAT_NAMES, coco_evaluate, ground_truth_for

# Annotation 10 is a 20 x 20 box (w * h = 400 < 32^2: small by its box) whose file area is
# 5000, a segmentation area in (32^2, 96^2]: medium for pycocotools.
ANNOTATIONS = [
    {"id": 10, "image_id": 1, "category_id": 7, "bbox": [10, 10, 20, 20], "area": 5000.0, "iscrowd": 0},
    {"id": 11, "image_id": 2, "category_id": 7, "bbox": [0, 0, 60, 60], "area": 3000.0, "iscrowd": 0},
    {"id": 12, "image_id": 3, "category_id": 7, "bbox": [5, 5, 20, 20], "area": 350.0, "iscrowd": 0},
    {"id": 13, "image_id": 4, "category_id": 7, "bbox": [0, 0, 30, 30], "area": 800.0, "iscrowd": 0},
]
DETECTIONS = [
    {"image_id": 1, "category_id": 7, "bbox": [10, 10, 20, 20], "score": 0.9},  # matches 10
    {"image_id": 2, "category_id": 7, "bbox": [50, 50, 30, 30], "score": 0.8},  # false positive, 900 px
    {"image_id": 3, "category_id": 7, "bbox": [5, 5, 20, 20], "score": 0.7},  # matches 12
]


@pytest.fixture
def coco_file(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in (1, 2, 3, 4):
        Image.new("RGB", (100, 100), (90, 90, 90)).save(images / f"{i}.jpg")
    gt = {
        "images": [{"id": i, "file_name": f"{i}.jpg", "width": 100, "height": 100} for i in (1, 2, 3, 4)],
        "annotations": ANNOTATIONS,
        "categories": [{"id": 7, "name": "cat"}],
    }
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(gt))
    return path


def pycocotools_on_file(path, detections, image_ids=None):
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(path))
        evaluator = COCOeval(coco_gt, coco_gt.loadRes([dict(d) for d in detections]), "bbox")
        if image_ids is not None:
            evaluator.params.imgIds = sorted(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return dict(zip(STAT_NAMES, evaluator.stats))


def test_coco_ground_truth_is_the_file_and_scores_equal_pycocotools(coco_file):
    dataset = load_dataset("coco", str(coco_file), images=str(coco_file.parent / "images"))
    gt = ground_truth_for(dataset, "coco", str(coco_file))
    assert [a["area"] for a in gt["annotations"]] == [5000.0, 3000.0, 350.0, 800.0]
    metrics = coco_evaluate(gt, DETECTIONS)["coco"]
    direct = pycocotools_on_file(coco_file, DETECTIONS)
    for name in STAT_NAMES:
        assert metrics[name] == pytest.approx(direct[name], abs=1e-12), name
    # Small by the file: annotations 12 and 13. Ranked small-range detections: 0.9 (its gt 10
    # is medium: ignored), 0.8 false positive (900 px), 0.7 true positive (12); 13 is missed.
    # Precision 1/2 reached at recall 1/2, nothing beyond: AP = 0.5 * 51 / 101 at every IoU.
    assert metrics["APs"] == pytest.approx(0.5 * 51 / 101)


def test_rebuilt_ground_truth_would_put_the_object_in_small(coco_file):
    dataset = load_dataset("coco", str(coco_file), images=str(coco_file.parent / "images"))
    rebuilt = dataset.to_coco()
    assert rebuilt["annotations"][0]["area"] == 400.0  # w * h, not the file's 5000
    on_file = coco_evaluate(ground_truth_for(dataset, "coco", str(coco_file)), DETECTIONS)["coco"]
    on_boxes = coco_evaluate(rebuilt, DETECTIONS)["coco"]
    assert on_boxes["APs"] != pytest.approx(on_file["APs"])
    assert on_boxes["APm"] != pytest.approx(on_file["APm"])


def test_only_the_images_of_the_dataset_are_scored(coco_file):
    dataset = load_dataset("coco", str(coco_file), images=str(coco_file.parent / "images"))
    dataset.records = [r for r in dataset.records if r.image_id != 4]
    gt = ground_truth_for(dataset, "coco", str(coco_file))
    assert [im["id"] for im in gt["images"]] == [1, 2, 3]
    assert [a["id"] for a in gt["annotations"]] == [10, 11, 12]
    metrics = coco_evaluate(gt, DETECTIONS)["coco"]
    direct = pycocotools_on_file(coco_file, DETECTIONS, image_ids=[1, 2, 3])
    np.testing.assert_allclose([metrics[n] for n in STAT_NAMES], [direct[n] for n in STAT_NAMES])


def test_other_formats_use_the_rebuilt_ground_truth(coco_file):
    dataset = load_dataset("coco", str(coco_file), images=str(coco_file.parent / "images"))
    assert ground_truth_for(dataset, "voc", str(coco_file)) == dataset.to_coco()
    assert ground_truth_for(dataset, "coco", None) == dataset.to_coco()


def test_unreadable_annotation_file_is_one_line(coco_file, tmp_path):
    dataset = load_dataset("coco", str(coco_file), images=str(coco_file.parent / "images"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DetectError, match="bad.json: cannot read the COCO annotations"):
        ground_truth_for(dataset, "coco", str(bad))


def test_evaluate_model_scores_a_coco_split_against_its_file(coco_file, tmp_path, make_model_dir):
    from detect.config import dump_config, load_config
    from detect.evaluation.evaluate_model import evaluate_model

    model_dir = make_model_dir(["cat"], tmp_path / "model")
    config = load_config(str(model_dir / "config.yaml"))
    config["dataset"]["format"] = "coco"
    config["dataset"]["val"] = {"annotations": str(coco_file), "images": str(coco_file.parent / "images"), "split": None}
    dump_config(config, str(tmp_path / "eval.yaml"))
    out = tmp_path / "eval"
    metrics = evaluate_model(str(model_dir), str(tmp_path / "eval.yaml"), out_dir=str(out), progress=False)
    detections = json.loads((out / "detections.json").read_text())
    assert detections  # the untrained model keeps its top 5 boxes per image (score threshold 0)
    direct = pycocotools_on_file(coco_file, detections)
    for name in STAT_NAMES:
        assert metrics["coco"][name] == pytest.approx(direct[name], abs=1e-9), name
