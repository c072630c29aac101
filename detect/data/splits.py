"""Config -> data: load a split's Dataset, open its proposals, build its input pipeline.

The one place where the `dataset`, `input` and `proposals` sections of a config become
arguments of the data layer (formats.load_dataset, and pipeline.make_dataset or
pydataset.make_batches: `input_loader` chooses).
"""

import importlib.util
import os

from detect.data.formats import load_dataset
from detect.errors import DetectError

# Raw RGB pixel value that each backbone's PixelNormalization (models/backbones.py) maps to
# zero: padding with it makes the padded canvas zero after normalization. VGG16 and ResNet
# use keras.applications' caffe mode (BGR mean 103.939, 116.779, 123.68, no std); tiny
# maps 127.5 to 0.
_CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)
PIXEL_MEAN_RGB = {
    "tiny": (127.5, 127.5, 127.5),
    "vgg16": _CAFFE_MEAN_RGB,
    "resnet50": _CAFFE_MEAN_RGB,
    "resnet101": _CAFFE_MEAN_RGB,
    # torchvision's ImageNet mean (0.485, 0.456, 0.406) x 255: its zero padding after Normalize.
    "torchvision_resnet50": (123.675, 116.28, 103.53),
    "torchvision_mobilenet_v3_large": (123.675, 116.28, 103.53),
}


def pad_value(backbone_name):
    """(3,) RGB raw pixel value of canvas padding for a backbone (zero after its normalization)."""
    # A feature-pyramid variant (tiny_fpn, resnet50_fpn, ...) normalizes as its trunk does.
    backbone_name = backbone_name.removesuffix("_fpn")
    if backbone_name not in PIXEL_MEAN_RGB:
        raise DetectError(f"backbone.name: no pixel mean known for {backbone_name!r}")
    return PIXEL_MEAN_RGB[backbone_name]


def load_split(config, split, check_images=True):
    """Load and validate a dataset split named in the config (train | val | test); None if unset."""
    spec = config["dataset"][split]
    if not spec.get("annotations"):
        return None
    return load_dataset(
        config["dataset"]["format"],
        spec["annotations"],
        images=spec.get("images"),
        split=spec.get("split"),
        classes=config["dataset"].get("classes"),
        check_images=check_images,
    )


def proposals_for(config, dataset, split):
    """The open proposal file (proposals.cache.ProposalFile) of a split for detectors that
    read proposals (R-CNN, Fast R-CNN), else None. Proposals are read per image later.

    Raises:
        DetectError: proposals.<split> is unset, missing, or lacks an image of the dataset.
    """
    if config["detector"] in ("faster_rcnn", "mask_rcnn"):
        return None
    from detect.proposals.cache import load_proposals

    path = config["proposals"].get(split)
    if not path:
        raise DetectError(
            f"config: proposals.{split} is not set; compute it with "
            f"`detect proposals --config CONFIG --split {split} --out FILE`"
        )
    if not os.path.isfile(path):
        raise DetectError(f"proposal file not found: {path} (run `detect proposals --split {split} --out {path}`)")
    proposal_file = load_proposals(path)
    missing = [r.image_id for r in dataset.records if r.image_id not in proposal_file]
    if missing:
        proposal_file.close()
        raise DetectError(f"{path}: no proposals for image id {missing[0]} ({len(missing)} images missing)")
    return proposal_file


def has_tensorflow():
    """True where TensorFlow can be imported (without importing it)."""
    import sys

    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"] is not None
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except ValueError:
        return False


def input_loader(config=None):
    """tf_data | pydataset: the config's input.loader, where `auto` is tf.data when
    TensorFlow is installed (every Keras backend iterates it) and the PyDataset path
    otherwise. Asking for tf_data without TensorFlow is a DetectError."""
    choice = ((config or {}).get("input") or {}).get("loader", "auto")
    if choice == "auto":
        return "tf_data" if has_tensorflow() else "pydataset"
    if choice == "tf_data" and not has_tensorflow():
        raise DetectError("config: input.loader is tf_data but TensorFlow is not installed "
                          "(use input.loader=pydataset or auto)")
    return choice


def pipeline(config, dataset, training, skipped=None, batch_size=None, split=None, proposals=None):
    """The input pipeline for a dataset under a config's input settings: a tf.data.Dataset
    or a pydataset.DetectionBatches (input_loader), with the same batches.

    proposals: a proposal file path (or ProposalFile) to feed instead of the config's
    proposals.<split> (the alternating schedule's step 2 feeds those of its step-1 RPN).
    Training pipelines repeat forever.
    """
    inp = config["input"]
    split = split or ("train" if training else "val")
    if proposals is None:
        proposals = proposals_for(config, dataset, split)
    loader = input_loader(config)
    if loader == "pydataset":
        from detect.data.pydataset import make_batches as make_dataset

        extra = {"repeat": training}
    else:
        from detect.data.pipeline import make_dataset

        extra = {}
    ds = make_dataset(
        dataset,
        batch_size=batch_size or config["training"]["batch_size"],
        min_size=inp["min_size"],
        max_size=inp["max_size"],
        canvas_size=inp.get("canvas"),
        resize_rule=inp.get("resize", "detect"),
        max_boxes=inp["max_boxes"],
        training=training,
        flip=inp["flip"] and training,
        cache=inp["cache"],
        seed=config["seed"],
        skipped=skipped,
        drop_remainder=training,
        proposals=proposals,
        num_proposals=config["proposals"]["max_proposals"],
        pad_value=pad_value(config["backbone"]["name"]),
        masks=config["detector"] == "mask_rcnn",
        **extra,
    )
    return ds.repeat() if training and loader == "tf_data" else ds
