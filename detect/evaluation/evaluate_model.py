"""`detect evaluate MODEL_DIR`: run a trained model over a split and score it."""

import os

from detect.errors import DetectError
from detect.evaluation.coco_eval import ground_truth_for
from detect.evaluation.detections import collect_detections
from detect.evaluation.report import evaluate_detections
from detect.models.loading import load_model_dir


def evaluate_model(model_dir, config_path=None, split="val", out_dir=None, batch_size=8, progress=True,
                   precision=None):
    """Detections + COCO/VOC metrics for a model folder on a dataset split; returns metrics.

    precision: float32 | bf16 (detect/inference/precision.py); None: the config's test.precision."""
    from detect.config import load_config
    from detect.data.splits import load_split, pipeline
    from detect.inference.precision import apply_precision

    model, config = load_model_dir(model_dir)
    if config_path:
        config = load_config(config_path)
    precision = precision or config["test"]["precision"]
    apply_precision(model, precision)
    dataset = load_split(config, split)
    if dataset is None:
        raise DetectError(f"config: dataset.{split}.annotations is not set")
    to_category = label_mapping(model.class_names, dataset)
    tf_dataset = pipeline(config, dataset, training=False, batch_size=batch_size, split=split)
    results, num_images, seconds = collect_detections(
        model, tf_dataset, to_category, total=len(dataset), progress=progress
    )
    out_dir = out_dir or os.path.join(model_dir, f"eval_{split}")
    extra = {"seconds_per_image": seconds / max(num_images, 1), "split": split, "precision": precision}
    gt = ground_truth_for(dataset, config["dataset"]["format"], config["dataset"][split].get("annotations"))
    image_paths = {record.image_id: record.path for record in dataset.records}
    return evaluate_detections(gt, results, out_dir, extra=extra, image_paths=image_paths,
                               model=model_section(model_dir, out_dir),
                               source=f"{model_dir} on the {split} split of {dataset.source}")


def label_mapping(model_classes, dataset):
    """model label -> the dataset's category id. The same class list maps label to label; a
    model whose classes include every class of the dataset (a COCO detector converted from
    torchvision, on a dataset of some of COCO's classes) maps by name, and its other classes
    map to None (their detections are not scored). Anything else is a DetectError."""
    model_classes = list(model_classes)
    if model_classes == list(dataset.classes):
        return dataset.label_to_category_id
    missing = [c for c in dataset.classes if c not in model_classes]
    if missing:
        raise DetectError(f"model classes {model_classes} differ from the classes of {dataset.source}: "
                          f"{list(dataset.classes)} ({missing[0]!r} is not a class of the model)")
    by_name = {name: dataset.label_to_category_id(i) for i, name in enumerate(dataset.classes, start=1)}
    table = {label: by_name.get(name) for label, name in enumerate(model_classes, start=1)}
    return table.get


def model_section(model_dir, out_dir):
    """The model part of report.html: the folder, its config.yaml text and its training
    curves (loss_curve.png, or drawn from history.csv into `out_dir` when it is missing)."""
    from detect.training.loop import plot_history

    config_path = os.path.join(model_dir, "config.yaml")
    config_text = None
    if os.path.isfile(config_path):
        with open(config_path, encoding="utf-8") as f:
            config_text = f.read()
    curve = os.path.join(model_dir, "loss_curve.png")
    history = os.path.join(model_dir, "history.csv")
    if not os.path.isfile(curve):
        curve = None
        if os.path.isfile(history):
            os.makedirs(out_dir, exist_ok=True)
            curve = plot_history(history, os.path.join(out_dir, "loss_curve.png"))
    return {"model_dir": os.path.abspath(model_dir), "config_text": config_text, "loss_curve": curve}
