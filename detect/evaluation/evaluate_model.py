"""`detect evaluate MODEL_DIR`: run a trained model over a split and score it."""

import os

from detect.errors import DetectError
from detect.evaluation.coco_eval import ground_truth_for
from detect.evaluation.detections import collect_detections
from detect.evaluation.report import evaluate_detections
from detect.inference.predictor import load_model_dir


def evaluate_model(model_dir, config_path=None, split="val", out_dir=None, batch_size=8, progress=True):
    """Detections + COCO/VOC metrics for a model folder on a dataset split; returns metrics."""
    from detect.config import load_config
    from detect.training.train import load_split, pipeline

    model, config = load_model_dir(model_dir)
    if config_path:
        config = load_config(config_path)
    dataset = load_split(config, split)
    if dataset is None:
        raise DetectError(f"config: dataset.{split}.annotations is not set")
    if list(dataset.classes) != list(model.class_names):
        raise DetectError(
            f"model classes {model.class_names} differ from the classes of {dataset.source}: {dataset.classes}"
        )
    tf_dataset = pipeline(config, dataset, training=False, batch_size=batch_size, split=split)
    results, num_images, seconds = collect_detections(
        model, tf_dataset, dataset.label_to_category_id, total=len(dataset), progress=progress
    )
    out_dir = out_dir or os.path.join(model_dir, f"eval_{split}")
    extra = {"seconds_per_image": seconds / max(num_images, 1), "split": split}
    gt = ground_truth_for(dataset, config["dataset"]["format"], config["dataset"][split].get("annotations"))
    return evaluate_detections(gt, results, out_dir, extra=extra)
