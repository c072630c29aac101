"""Detector name -> builder: the one place where a YAML config becomes parts and models.

Each config section feeds one constructor; the tables below say which key feeds which
argument. tests/models/test_registry.py checks that every default in detect.config.DEFAULTS
equals the default of the argument it feeds, so a setting is declared once.
"""

from detect.data.canvas import canvas_for
from detect.errors import DetectError

# config key -> RegionProposalNetwork argument (the rpn section, one to one).
RPN_KEYS = {f"rpn.{name}": name for name in (
    "anchor_sizes", "anchor_ratios", "channels", "fg_iou", "bg_iou", "batch_size", "positive_fraction",
    "pre_nms_top_n_train", "post_nms_top_n_train", "pre_nms_top_n_test", "post_nms_top_n_test", "nms_iou",
    "min_size", "ignore_border", "loss_weight", "conv_depth", "anchor_rule", "shared_anchor_sizes", "score_threshold",
)}

# config key -> RoIHeads argument.
ROI_HEADS_KEYS = {
    "roi.pool": "pool",
    "roi.sampling_ratio": "sampling_ratio",
    "roi.batch_size": "batch_size",
    "roi.positive_fraction": "positive_fraction",
    "roi.fg_iou": "fg_iou",
    "roi.bg_iou_low": "bg_iou_low",
    "roi.box_weights": "box_weights",
    "roi.loss_weight": "loss_weight",
    "test.score_threshold": "score_threshold",
    "test.nms_iou": "nms_iou",
    "test.max_detections": "max_detections",
    "roi.canonical_size": "canonical_size",
    "roi.aligned": "aligned",
    "test.min_box_size": "min_box_size",
}

# config key -> MaskHead argument (detector mask_rcnn).
MASK_HEAD_KEYS = {f"mask.{name}": name for name in (
    "pool_size", "channels", "num_convs", "num_rois", "loss_weight", "threshold", "paste",
)}

# config key -> build_backbone argument.
BACKBONE_KEYS = {
    "backbone.name": "name",
    "backbone.weights": "weights",
    "backbone.width": "width",
    "roi.size": "roi_size",
    "roi.head_dim": "head_dim",
    "fpn.channels": "fpn_channels",
    "roi.head_convs": "head_convs",
    "roi.head_fcs": "head_fcs",
}

# config key -> FeaturePyramid argument (backbones named *_fpn).
FPN_KEYS = {"fpn.channels": "channels", "fpn.norm": "norm"}

# config key -> RCNN argument.
RCNN_KEYS = {
    "backbone.name": "backbone",
    "backbone.weights": "backbone_weights",
    "backbone.width": "backbone_width",
    "roi.head_dim": "head_dim",
    "rcnn.crop_size": "crop_size",
    "rcnn.context": "context",
    "rcnn.chunk_size": "chunk_size",
    "rcnn.fg_iou": "fg_iou",
    "test.score_threshold": "score_threshold",
    "test.nms_iou": "nms_iou",
    "test.max_detections": "max_detections",
}


def lookup(config, key):
    """config["a"]["b"] for key "a.b"."""
    section, name = key.split(".")
    return config[section][name]


def arguments(config, table):
    return {argument: lookup(config, key) for key, argument in table.items()}


def canvas_size(config):
    return canvas_for(config["input"]["max_size"], config["input"].get("canvas"))


def build_two_stage(config, class_names, with_rpn):
    """A TwoStageDetector from a resolved config: backbone, RPN (or none), RoI heads."""
    from detect.models.backbones import build_backbone
    from detect.models.detector import TwoStageDetector
    from detect.models.roi_heads import RoIHeads
    from detect.models.rpn import RegionProposalNetwork

    trunk, box_head, info = build_backbone(**arguments(config, BACKBONE_KEYS))
    neck, pyramid = _neck(config, info)
    rpn = None
    if with_rpn:
        rpn = RegionProposalNetwork(stride=info["stride"], **pyramid.get("rpn", {}), **arguments(config, RPN_KEYS),
                                    name="rpn")
    roi_heads = RoIHeads(
        num_classes=len(class_names), box_head=box_head, pool_size=info["roi_pool_size"],
        spatial_scale=1.0 / info["stride"], **pyramid.get("roi_heads", {}), **arguments(config, ROI_HEADS_KEYS),
        name="roi_heads",
    )
    return TwoStageDetector(backbone=trunk, neck=neck, rpn=rpn, roi_heads=roi_heads, class_names=class_names,
                            canvas_size=canvas_size(config))


def _neck(config, info):
    """(FeaturePyramid or None, the extra RPN / RoIHeads arguments of a pyramid)."""
    if not info.get("fpn"):
        return None, {}
    from detect.models.fpn import FeaturePyramid

    strides = tuple(info["strides"])
    sizes = config["rpn"]["anchor_sizes"]
    if len(sizes) != len(strides) and not config["rpn"]["shared_anchor_sizes"]:
        raise DetectError(
            f"rpn.anchor_sizes: {config['backbone']['name']} has {len(strides)} pyramid levels (P2-P6) and takes "
            f"one anchor size per level, got {len(sizes)} ({sizes})"
        )
    if config["roi"]["pool"] != "align":
        raise DetectError(f"roi.pool: {config['backbone']['name']} pools RoIs from pyramid levels with align, "
                          f"got {config['roi']['pool']}")
    inputs = strides[:-1]
    consecutive = inputs == tuple(4 * 2**i for i in range(len(inputs)))
    neck = FeaturePyramid(**arguments(config, FPN_KEYS), num_inputs=len(inputs),
                          input_strides=None if consecutive else inputs, name="fpn")
    # RoIs are pooled from P2..P5 (P6 serves the RPN only), as in the FPN paper; of maps
    # that share a stride the first is pooled (torchvision's MultiScaleRoIAlign maps every
    # RoI to the first map of a scale).
    pooled = tuple(dict.fromkeys(inputs))
    return neck, {"rpn": {"strides": strides}, "roi_heads": {"pool_strides": pooled}}


def rcnn_kwargs(config):
    """Keyword arguments of RCNN from a resolved config dict.

    The fine-tuning batch of rcnn.fg_per_batch + rcnn.bg_per_batch regions is spread over
    the training.batch_size images of a batch (rounded up per image).
    """
    r = config["rcnn"]
    regions = int(r["fg_per_batch"]) + int(r["bg_per_batch"])
    images = int(config["training"]["batch_size"])
    return {
        **arguments(config, RCNN_KEYS),
        "canvas_size": canvas_size(config),
        "regions_per_image": max(-(-regions // images), 1),
        "positive_fraction": r["fg_per_batch"] / max(regions, 1),
    }


def _rcnn(config, class_names):
    from detect.models.rcnn import RCNN

    return RCNN(class_names=class_names, **rcnn_kwargs(config))


def build_mask_rcnn(config, class_names):
    """A MaskRCNN: the parts of the Faster R-CNN the config describes, plus a MaskHead that
    pools as the RoI heads do (same levels or map, sampling ratio and roi.aligned)."""
    from detect.models.mask_head import MaskHead
    from detect.models.mask_rcnn import MaskRCNN

    faster = build_two_stage(config, class_names, with_rpn=True)
    heads = faster.roi_heads
    mask_args = arguments(config, MASK_HEAD_KEYS)
    if mask_args["num_rois"] is None:
        mask_args["num_rois"] = max(int(heads.batch_size * heads.positive_fraction), 1)
    mask_head = MaskHead(num_classes=len(class_names), spatial_scale=heads.spatial_scale,
                         sampling_ratio=heads.sampling_ratio, pool_strides=heads.pool_strides,
                         canonical_size=heads.canonical_size, aligned=heads.aligned, **mask_args,
                         name="mask_head")
    return MaskRCNN(backbone=faster.backbone, neck=faster.neck, rpn=faster.rpn, roi_heads=heads,
                    mask_head=mask_head, class_names=class_names, canvas_size=faster.canvas_size)


BUILDERS = {
    "faster_rcnn": lambda config, names: build_two_stage(config, names, with_rpn=True),
    "mask_rcnn": build_mask_rcnn,
    "fast_rcnn": lambda config, names: build_two_stage(config, names, with_rpn=False),
    "rcnn": _rcnn,
}

MODEL_MODULES = ("detect.models.detector", "detect.models.rcnn", "detect.models.mask_rcnn",
                 "detect.models.torchvision_backbones")


def import_models():
    """Import every model module so its classes are registered for keras.saving.load_model."""
    import importlib

    for name in MODEL_MODULES:
        importlib.import_module(name)


def build_model(config, class_names):
    """Build the detector a resolved config names, for the given class list."""
    name = config["detector"]
    if name not in BUILDERS:
        raise DetectError(f"detector `{name}` is not available in this version (available: {', '.join(BUILDERS)})")
    return BUILDERS[name](config, list(class_names))
