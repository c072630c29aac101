"""`model.init`: start training from another detector (fine-tuning), as torchvision's tutorial does.

`model.init` names a model folder (one `detect train` or `detect weights convert` wrote) or a
zoo name (`fasterrcnn_resnet50_fpn`, ...: converted once from torchvision's published
checkpoint into Keras' cache, ~/.keras/detect_zoo/<name>). Every part of the new detector
takes the init's weights: backbone, FPN neck, RPN, the box head (fc6/fc7 or convs); the class
predictor (class scores and per-class boxes) is re-initialised for the training set's classes,
unless both class lists are the same, when it is kept too. The two detectors must share their
architecture: a part whose weights differ in count or shape is a one-line DetectError.
"""

import os

from detect.errors import DetectError

PARTS = ("backbone", "neck", "rpn", "box_head")


def _part(model, name):
    if name == "box_head":
        return model.roi_heads.box_head
    return getattr(model, name, None)


def init_folder(source):
    """The model folder `source` names: a folder, or a zoo name (converted on first use)."""
    from detect.zoo.torchvision import ARCHS, convert

    if os.path.isdir(source):
        return source
    if source in ARCHS:
        home = os.path.expanduser(os.environ.get("KERAS_HOME", "~/.keras"))
        folder = os.path.join(home, "detect_zoo", source)
        if not os.path.isfile(os.path.join(folder, "model.keras")):
            convert(source, folder, overwrite=True)
        return folder
    raise DetectError(f"model.init: {source} is neither a model folder nor a zoo name ({', '.join(ARCHS)})")


def _copy(dst, src, what, source):
    dst_weights, src_weights = list(dst.weights), list(src.weights)
    shapes = [tuple(w.shape) for w in dst_weights]
    src_shapes = [tuple(w.shape) for w in src_weights]
    if shapes != src_shapes:
        first = next((i for i, (a, b) in enumerate(zip(shapes, src_shapes)) if a != b), min(len(shapes),
                                                                                              len(src_shapes)))
        detail = (f"{dst_weights[first].path} {shapes[first]} vs {src_shapes[first]}"
                  if first < min(len(shapes), len(src_shapes)) else f"{len(shapes)} vs {len(src_shapes)} weights")
        raise DetectError(f"model.init: the {what} of {source} does not fit this config's ({detail}): "
                          "train from a config of the same architecture")
    for a, b in zip(dst_weights, src_weights):
        a.assign(b)
    return len(dst_weights)


def initialize_from(model, source):
    """Copy the weights of the detector in `source` (see the module docstring) into `model`;
    returns {"folder", "parts": {part: weights copied}, "predictor": "kept" | "re-initialised"}."""
    from detect.models.loading import load_model_dir

    folder = init_folder(source)
    init, _ = load_model_dir(folder)
    copied = {}
    for name in PARTS:
        dst, src = _part(model, name), _part(init, name)
        if dst is None and src is None:
            continue
        if dst is None or src is None:
            raise DetectError(f"model.init: {folder} {'has' if src is not None else 'has no'} {name}, "
                              "this config's detector does not match it")
        copied[name] = _copy(dst, src, name, folder)
    predictor = "re-initialised"
    if list(init.class_names) == list(model.class_names):
        _copy(model.roi_heads.predictor, init.roi_heads.predictor, "box predictor", folder)
        predictor = "kept"
    return {"folder": folder, "parts": copied, "predictor": predictor}


def apply_init(model, config):
    """Start `model` from config's model.init (see initialize_from), saying so in one line;
    None when model.init is unset."""
    source = config["model"]["init"]
    if not source:
        return None
    done = initialize_from(model, source)
    print(f"model.init: weights of {', '.join(done['parts'])} from {done['folder']}; class predictor "
          f"{done['predictor']} ({model.num_classes} classes)")
    return done
