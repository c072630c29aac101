"""Detector name -> builder. The one place where a YAML config becomes model arguments."""

from detect.data.pipeline import canvas_for
from detect.errors import DetectError


def two_stage_kwargs(config):
    """Keyword arguments of FasterRCNN (and Fast R-CNN) from a resolved config dict."""
    backbone, rpn, roi, test = config["backbone"], config["rpn"], config["roi"], config["test"]
    return {
        "canvas_size": canvas_for(config["input"]["max_size"], config["input"].get("canvas")),
        "backbone": backbone["name"],
        "backbone_weights": backbone["weights"],
        "backbone_width": backbone["width"],
        "anchor_sizes": rpn["anchor_sizes"],
        "anchor_ratios": rpn["anchor_ratios"],
        "rpn_channels": rpn["channels"],
        "rpn_fg_iou": rpn["fg_iou"],
        "rpn_bg_iou": rpn["bg_iou"],
        "rpn_batch_size": rpn["batch_size"],
        "rpn_positive_fraction": rpn["positive_fraction"],
        "pre_nms_top_n_train": rpn["pre_nms_top_n_train"],
        "post_nms_top_n_train": rpn["post_nms_top_n_train"],
        "pre_nms_top_n_test": rpn["pre_nms_top_n_test"],
        "post_nms_top_n_test": rpn["post_nms_top_n_test"],
        "rpn_nms_iou": rpn["nms_iou"],
        "rpn_min_size": rpn["min_size"],
        "ignore_border": rpn["ignore_border"],
        "rpn_loss_weight": rpn["loss_weight"],
        "roi_pool": roi["pool"],
        "roi_size": roi["size"],
        "sampling_ratio": roi["sampling_ratio"],
        "roi_batch_size": roi["batch_size"],
        "roi_positive_fraction": roi["positive_fraction"],
        "roi_fg_iou": roi["fg_iou"],
        "head_dim": roi["head_dim"],
        "box_weights": roi["box_weights"],
        "roi_loss_weight": roi["loss_weight"],
        "score_threshold": test["score_threshold"],
        "nms_iou": test["nms_iou"],
        "max_detections": test["max_detections"],
    }


def _faster_rcnn(config, class_names):
    from detect.models.faster_rcnn import FasterRCNN

    return FasterRCNN(class_names=class_names, **two_stage_kwargs(config))


def _fast_rcnn(config, class_names):
    from detect.models.fast_rcnn import FastRCNN

    return FastRCNN(class_names=class_names, **two_stage_kwargs(config))


def rcnn_kwargs(config):
    """Keyword arguments of RCNN from a resolved config dict.

    The fine-tuning batch of rcnn.fg_per_batch + rcnn.bg_per_batch regions is spread over
    the training.batch_size images of a batch (rounded up per image).
    """
    backbone, r, test = config["backbone"], config["rcnn"], config["test"]
    regions = int(r["fg_per_batch"]) + int(r["bg_per_batch"])
    images = int(config["training"]["batch_size"])
    return {
        "canvas_size": canvas_for(config["input"]["max_size"], config["input"].get("canvas")),
        "backbone": backbone["name"],
        "backbone_weights": backbone["weights"],
        "backbone_width": backbone["width"],
        "crop_size": r["crop_size"],
        "context": r["context"],
        "chunk_size": r["chunk_size"],
        "head_dim": config["roi"]["head_dim"],
        "fg_iou": r["fg_iou"],
        "regions_per_image": max(-(-regions // images), 1),
        "positive_fraction": r["fg_per_batch"] / max(regions, 1),
        "score_threshold": test["score_threshold"],
        "nms_iou": test["nms_iou"],
        "max_detections": test["max_detections"],
    }


def _rcnn(config, class_names):
    from detect.models.rcnn import RCNN

    return RCNN(class_names=class_names, **rcnn_kwargs(config))


BUILDERS = {"faster_rcnn": _faster_rcnn, "fast_rcnn": _fast_rcnn, "rcnn": _rcnn}


MODEL_MODULES = ("detect.models.faster_rcnn", "detect.models.fast_rcnn", "detect.models.rcnn")


def import_models():
    """Import every model module so its classes are registered for keras.saving.load_model."""
    import importlib

    for name in MODEL_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise


def build_model(config, class_names):
    """Build the detector a resolved config names, for the given class list."""
    name = config["detector"]
    if name not in BUILDERS:
        raise DetectError(f"detector `{name}` is not available in this version (available: {', '.join(BUILDERS)})")
    return BUILDERS[name](config, list(class_names))
