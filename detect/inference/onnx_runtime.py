"""Run an ONNX export (`detect export MODEL --format onnx --out DIR`) in ONNX Runtime.

`OnnxPredictor.from_dir(DIR)` (or `detect.load(DIR)`, or `detect predict --runtime onnx
DIR ...`) gives the Keras Predictor's interface (predict, predict_batch, prepare,
class_names) on the exported file: images are resized and padded by the Predictor's own
code (the rule and padding of the training and evaluation pipelines, from export.json's
min_size, max_size, canvas_size and pad_value), and model.onnx holds `predict_step`
itself, postprocessing included, so boxes come back in image pixels as they do from
Keras. Portrait images of a non-square canvas run model_portrait.onnx, the same model
on the transposed canvas (export.py writes both).

ONNX Runtime runs the graph with its own CPU kernels (MLAS) and thread pool, one thread
per physical core by default; TensorFlow still resizes the images.
"""

import json
import os
import types

import numpy as np

from detect.errors import DetectError
from detect.inference.predictor import Predictor

DESCRIPTION_FILE = "export.json"


def is_onnx_export(folder):
    """True when `folder` holds an ONNX export (export.json with format onnx)."""
    path = os.path.join(str(folder), DESCRIPTION_FILE)
    if not os.path.isfile(path):
        return False
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f).get("format") == "onnx"
    except (OSError, ValueError, AttributeError):
        return False


def read_description(folder):
    """export.json of an ONNX export folder, or a one-line DetectError saying what is wrong."""
    path = os.path.join(str(folder), DESCRIPTION_FILE)
    if not os.path.isfile(path):
        raise DetectError(f"{folder}: not an ONNX export ({DESCRIPTION_FILE} is missing); make one with "
                          "`detect export MODEL_DIR --format onnx --out FOLDER`")
    try:
        with open(path, encoding="utf-8") as f:
            description = json.load(f)
    except (OSError, ValueError) as e:
        raise DetectError(f"{path}: not a readable export description ({str(e).splitlines()[0]})") from None
    if not isinstance(description, dict) or description.get("format") != "onnx":
        found = description.get("format") if isinstance(description, dict) else None
        raise DetectError(f"{folder}: --runtime onnx needs an ONNX export, this folder holds format {found!r}")
    missing = [key for key in ("artifact", "canvas_size", "min_size", "max_size", "class_names", "pad_value")
               if key not in description]
    if missing:
        raise DetectError(f"{path}: written by an earlier version of detect (no {', '.join(missing)}); "
                          "export the model again")
    return description


def _session(path):
    try:
        import onnxruntime
    except ImportError:
        raise DetectError("--runtime onnx needs onnxruntime, not installed here: pip install onnxruntime "
                          "(or the package's export extra)") from None
    if not os.path.isfile(path):
        raise DetectError(f"{path}: ONNX file is missing")
    try:
        return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - any loader failure is reported in one line
        raise DetectError(f"{path}: ONNX Runtime cannot load it ({str(e).strip().splitlines()[0]})") from None


class OnnxModel:
    """Callable like PredictFunction: dict of batched NumPy inputs -> dict of NumPy outputs."""

    def __init__(self, path):
        self.path = path
        self.session = _session(path)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, inputs):
        feed = {name: np.asarray(inputs[name]) for name in self.input_names}
        return dict(zip(self.output_names, self.session.run(self.output_names, feed)))


class OnnxPredictor(Predictor):
    """The Predictor's resize, padding and result handling around an ONNX export.

    Only the model call differs: each canvas runs its exported file in ONNX Runtime.
    """

    def __init__(self, folder):  # noqa: super().__init__ traces a Keras model; this one has none
        description = read_description(folder)
        self.folder = str(folder)
        self.description = description
        self.precision = "float32"
        proposals = description.get("proposals")
        # What the Predictor's prepare / resize read: config["input"], config["proposals"], model.use_rpn.
        self.config = {
            "input": {"min_size": description["min_size"], "max_size": description["max_size"],
                      "canvas": list(description["canvas_size"])},
            "proposals": proposals,
        }
        self.model = types.SimpleNamespace(use_rpn=proposals is None, class_names=description["class_names"])
        self.class_names = list(description["class_names"])
        height, width = (int(s) for s in description["canvas_size"])
        self.canvases = ((height, width), (width, height))
        self.canvas_size = self.canvases[0]
        self.per_image = False  # export.py writes fixed canvases (the square one for per_image configs)
        self.resize_rule = description.get("resize_rule", "detect")
        self.pad_value = np.asarray(description["pad_value"], np.float32)
        self._detect = {self.canvases[0]: OnnxModel(os.path.join(self.folder, description["artifact"]))}
        if height != width:
            portrait = description.get("portrait_artifact")
            if portrait is None:
                raise DetectError(f"{folder}: exported by an earlier version of detect without the portrait-canvas "
                                  "file; export the model again")
            self._detect[self.canvases[1]] = OnnxModel(os.path.join(self.folder, portrait))
        self._resizers = {}

    @classmethod
    def from_dir(cls, folder, precision=None):
        if precision not in (None, "float32"):
            raise DetectError(f"--precision {precision}: the ONNX runtime runs the exported float32 graph; "
                              "use --runtime keras for bf16")
        return cls(folder)
