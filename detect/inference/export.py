"""Export a trained detector for serving: SavedModel, ONNX or LiteRT (.tflite).

Every format serves `model.predict_step` (final detections), not `call` (raw head outputs).
Shape shorthand: N images, Hc x Wc the model's fixed canvas, P proposals, D = max
detections, K classes.

  inputs   images (N, Hc, Wc, 3) float32 RGB in [0, 255], resized content at the top-left
           of a zero canvas; image_shape (N, 2) int32 content (height, width); scale (N, 2)
           float32 (sy, sx) = resized / original size; models without an RPN (Fast R-CNN)
           also take proposals (N, P, 4) xyxy canvas pixels (all-zero rows are padding).
  outputs  boxes (N, D, 4) xyxy original image pixels, scores (N, D), labels (N, D) int32
           in 1..K (0 in padding rows), num_detections (N,) int32.

`export.json` beside the artifact says the same, with the resize rule and class names,
for users without this package.

Formats (out_dir is replaced as a whole, never left half-written):
  saved_model  out_dir is the SavedModel; its signature "serve" (also "serving_default")
               takes the inputs above by name: `tf.saved_model.load(out_dir).signatures["serve"]`.
  litert       out_dir/model.tflite converted from that SavedModel, builtin ops wherever
               LiteRT has them and Select TF ops elsewhere. RoIAlign's CropAndResize has no
               LiteRT builtin and is the one op that keeps the default model from being
               builtin-only (NMS, class-offset form included, converts to builtins; RoIPool's
               while loop of dynamic-shape tensor lists does not): the file runs only where
               the Flex delegate is linked in. export.json lists those ops under
               `select_tf_ops` ([] for a builtin-only file).
  onnx         out_dir/model.onnx through tf2onnx, on the landscape canvas the Predictor pads
               images onto (transforms.canvases: the input section's min_size x max_size rounded
               up to 32, or input.canvas), and out_dir/model_portrait.onnx on its transpose when
               it is not square; export.json's pad_value and resize rule prepare images as
               `detect predict` does (detect/inference/onnx_runtime.py runs them). (`pip install 'detect[export]'`: onnx,
               tf2onnx and onnxruntime are not dependencies of this package). Per-class NMS
               is one class-offset NMS (ops/nms.py), which becomes ONNX NonMaxSuppression;
               an op tf2onnx cannot convert would stay in the graph: that is an error.
"""

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import uuid
import warnings

import tensorflow as tf

from detect import compat
from detect.errors import DetectError

logger = logging.getLogger(__name__)

FORMATS = ("saved_model", "onnx", "litert")
ENDPOINT = "serve"
DESCRIPTION_FILE = "export.json"
# Artifact path inside the output folder; the SavedModel is the folder itself.
_ARTIFACTS = {"saved_model": ".", "onnx": "model.onnx", "litert": "model.tflite"}
# ONNX of a non-square canvas: a second file for portrait images on the transposed canvas,
# so the ONNX Runtime path (onnx_runtime.py) resizes and pads as the Keras Predictor does.
PORTRAIT_ONNX = "model_portrait.onnx"


def input_signature(model, canvas_size=None):
    """Named tf.TensorSpecs of the serving inputs, in argument order (batch size free).

    canvas_size: (Hc, Wc) of the images; None is the model's (landscape) canvas, the one
    exported models take. The Predictor also asks for the portrait canvas (its transpose).
    """
    height, width = canvas_size or model.canvas_size
    specs = [
        tf.TensorSpec((None, height, width, 3), tf.float32, name="images"),
        tf.TensorSpec((None, 2), tf.int32, name="image_shape"),
        tf.TensorSpec((None, 2), tf.float32, name="scale"),
    ]
    if not model.use_rpn:
        specs.append(tf.TensorSpec((None, None, 4), tf.float32, name="proposals"))
    return specs


def serving_function(model):
    """fn(images, image_shape, scale[, proposals]) -> detections dict of `model.predict_step`.

    Flat named arguments (not one dict) give the SavedModel signature named inputs.
    """
    if model.use_rpn:

        def serve(images, image_shape, scale):
            return model.predict_step({"images": images, "image_shape": image_shape, "scale": scale})

    else:

        def serve(images, image_shape, scale, proposals):
            inputs = {"images": images, "image_shape": image_shape, "scale": scale, "proposals": proposals}
            return model.predict_step(inputs)

    return serve


def onnx_canvases(config):
    """(landscape, portrait) canvases of an ONNX export: those the Predictor pads images onto
    (transforms.canvases), so the ONNX Runtime path sees the Keras path's inputs."""
    from detect.data.canvas import canvas_for
    from detect.data.transforms import canvases

    inp = config["input"]
    if inp.get("canvas") == "per_image":
        # A graph of fixed shapes cannot follow each image's canvas: the model's square one
        # holds every resized image (the ONNX path then pads more than the Keras one).
        square = canvas_for(inp["max_size"], None)
        return square, square
    return canvases(inp["min_size"], inp["max_size"], inp.get("canvas"))


def describe(model, config, fmt):
    """The export.json dict: how to prepare inputs and read outputs of the artifact."""
    height, width = onnx_canvases(config)[0] if fmt == "onnx" else model.canvas_size
    inputs = {
        "images": {
            "shape": [None, height, width, 3],
            "dtype": "float32",
            "meaning": "RGB in [0, 255]; resize by s = min(min_size / shorter side, max_size / longer side, "
            "canvas height / height, canvas width / width), round the size, place at the top-left "
            "of a canvas filled with pad_value (the RGB mean the backbone subtracts: zero after it)",
        },
        "image_shape": {"shape": [None, 2], "dtype": "int32", "meaning": "resized (height, width)"},
        "scale": {"shape": [None, 2], "dtype": "float32", "meaning": "(resized / original height, width)"},
    }
    if not model.use_rpn:
        inputs["proposals"] = {
            "shape": [None, None, 4],
            "dtype": "float32",
            "meaning": "x1, y1, x2, y2 in resized pixels; all-zero rows are padding",
        }
    from detect.data.splits import pad_value

    description = {
        "format": fmt,
        "artifact": _ARTIFACTS[fmt],
        "endpoint": ENDPOINT,
        "canvas_size": [height, width],
        "min_size": config["input"]["min_size"],
        "max_size": config["input"]["max_size"],
        # What `detect predict --runtime onnx` needs to prepare images as the Keras path does.
        "backbone": config["backbone"]["name"],
        "resize_rule": config["input"].get("resize", "detect"),
        "pad_value": [float(v) for v in pad_value(config["backbone"]["name"])],
        "class_names": list(model.class_names),
        "head_svd_ranks": None if model.head_svd_ranks is None else list(model.head_svd_ranks),
        "inputs": inputs,
        "outputs": {
            "boxes": "(N, D, 4) float32 x1, y1, x2, y2 in original image pixels",
            "scores": "(N, D) float32",
            "labels": "(N, D) int32; label i is class_names[i - 1]; 0 in padding rows",
            "num_detections": "(N,) int32 valid rows of each image",
            **({"masks": "(N, D, 2S, 2S) float32 probability of the detected class in each box (Mask R-CNN); "
                         "paste into the image (detect.ops.masks.paste_mask) and threshold at 0.5"}
               if hasattr(model, "mask_head") else {}),
        },
    }
    if not model.use_rpn:
        description["proposals"] = {key: config["proposals"][key] for key in ("mode", "max_side", "max_proposals")}
    if fmt == "onnx" and height != width:
        description["portrait_artifact"] = PORTRAIT_ONNX
    return description


# --------------------------------------------------------------------------- writers
def write_saved_model(model, path):
    """SavedModel at `path` with one signature, "serve" (also "serving_default")."""
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(ENDPOINT, serving_function(model), input_signature=input_signature(model))
    archive.write_out(path, verbose=False)
    return path


def _require_onnx():
    missing = [name for name in ("tf2onnx", "onnx") if importlib.util.find_spec(name) is None]
    if missing:
        raise DetectError(
            f"ONNX export needs {' and '.join(missing)}, not installed here: pip install tf2onnx onnx "
            "(or the package's export extra)"
        )


def write_onnx(model, path, canvas_size=None):
    """ONNX file at `path` converted by tf2onnx from the serving function, for images on
    the (Hc, Wc) `canvas_size` (None: the model's landscape canvas)."""
    _require_onnx()
    with _quiet_tf2onnx():
        import tf2onnx

        compat.patch_tf2onnx()
    import onnx

    specs = input_signature(model, canvas_size)
    function = tf.function(serving_function(model), input_signature=specs)
    try:
        with _quiet_tf2onnx():
            proto, _ = tf2onnx.convert.from_function(function, input_signature=specs, output_path=path)
    except Exception as e:  # noqa: BLE001 - any converter failure is reported in one line
        raise DetectError(f"ONNX conversion failed: {type(e).__name__}: {_first_line(e)}") from None
    # tf2onnx logs ops it cannot convert and keeps them as-is: the file would not load.
    standard = [node for node in _onnx_nodes(proto.graph) if node.domain in ("", "ai.onnx")]
    unconverted = sorted({node.op_type for node in standard if not onnx.defs.has(node.op_type)})
    if unconverted:
        raise DetectError(f"ONNX conversion failed: tf2onnx cannot convert TensorFlow op(s) {', '.join(unconverted)}")
    try:
        onnx.checker.check_model(proto)
    except Exception as e:  # noqa: BLE001 - any checker failure is reported in one line
        raise DetectError(f"ONNX conversion produced an invalid model: {_first_line(e)}") from None
    return path


def _onnx_nodes(graph):
    """Every node of an ONNX graph, those in Loop / If bodies (the RPN's per-image NMS) included."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            for subgraph in [attribute.g, *attribute.graphs] if attribute.HasField("g") else attribute.graphs:
                yield from _onnx_nodes(subgraph)


class _SkippedOptimizerPass(logging.Filter):
    """tf2onnx's transpose optimizer fails on a scalar added after an NHWC transpose (MobileNetV3's
    hard-swish x + 3) and logs the traceback as a warning; the pass is skipped and the graph
    stays correct (unoptimized there), so that one record is not for users."""

    def filter(self, record):
        if record.getMessage().startswith("Failed to apply optimize_transpose"):
            logger.debug("tf2onnx skipped its transpose optimizer on part of the graph")
            return False
        return True


@contextlib.contextmanager
def _quiet_tf2onnx():
    """tf2onnx's INFO lines (opset, constant folding, optimizer counts) and the NumPy
    FutureWarning of Keras' tf2onnx patch are not for users; its warnings and errors are."""
    tf2onnx_logger = logging.getLogger("tf2onnx")
    optimizer_logger = logging.getLogger("tf2onnx.optimizer")
    skipped = _SkippedOptimizerPass()
    level = tf2onnx_logger.level
    tf2onnx_logger.setLevel(max(level, logging.WARNING))
    optimizer_logger.addFilter(skipped)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        tf2onnx_logger.setLevel(level)
        optimizer_logger.removeFilter(skipped)


def write_litert(model, path):
    """LiteRT flatbuffer at `path`, converted from a SavedModel. The converter takes the
    builtin op wherever one exists and a Select TF op only where none does, so the file is
    builtin-only whenever the model allows (litert_select_ops lists the others)."""
    with tempfile.TemporaryDirectory(prefix="detect-litert-") as work:
        saved = write_saved_model(model, os.path.join(work, "saved_model"))
        try:
            converter = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=[ENDPOINT])
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
            flatbuffer = converter.convert()
        except Exception as e:  # noqa: BLE001 - any converter failure is reported in one line
            raise DetectError(f"LiteRT conversion failed: {type(e).__name__}: {_first_line(e)}") from None
    with open(path, "wb") as f:
        f.write(flatbuffer)
    return path


_WRITERS = {"saved_model": write_saved_model, "onnx": write_onnx, "litert": write_litert}


def litert_select_ops(path):
    """Sorted TensorFlow op names a .tflite file runs through the Flex delegate (None: unknown)."""
    try:
        from tensorflow.lite.python import schema_py_generated as schema
    except ImportError:
        return None
    with open(path, "rb") as f:
        model = schema.Model.GetRootAsModel(f.read(), 0)
    names = set()
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i).CustomCode()
        if code and code.startswith(b"Flex"):
            names.add(code[len(b"Flex") :].decode())
    return sorted(names)


def _first_line(error):
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else "no message"


# --------------------------------------------------------------------------- folders
def _check_out_dir(out_dir):
    """An output folder may be new, empty, or hold an earlier export (it is replaced)."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise DetectError(f"--out {out_dir}: exists and is not a folder")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not os.path.isfile(os.path.join(out_dir, DESCRIPTION_FILE)):
        raise DetectError(f"--out {out_dir}: folder is not empty and holds no earlier export ({DESCRIPTION_FILE})")


def _publish(staging, out_dir):
    """Move a finished export folder to out_dir; readers never see a half-written one."""
    if not os.path.exists(out_dir):
        os.replace(staging, out_dir)
        return
    retired = f"{staging}.retired"
    os.replace(out_dir, retired)
    os.replace(staging, out_dir)
    shutil.rmtree(retired, ignore_errors=True)


def export_detector(model, config, fmt, out_dir):
    """Write `model` in format `fmt` with export.json into out_dir; returns the artifact path.

    Args:
      model: a TwoStageDetector or RCNN; config: its resolved config (for the resize rule).
      fmt: saved_model | onnx | litert.
      out_dir: output folder: new, empty, or an earlier export, which is replaced.
    Returns:
      out_dir for saved_model, out_dir/model.onnx or out_dir/model.tflite.
    """
    if fmt not in FORMATS:
        raise DetectError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    _check_out_dir(out_dir)
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    # A sibling folder so the final move is a rename; mkdir (not mkdtemp) keeps the umask mode.
    staging = os.path.join(parent, f".{os.path.basename(os.path.abspath(out_dir))}.export-{uuid.uuid4().hex[:8]}")
    os.mkdir(staging)
    try:
        artifact = os.path.join(staging, _ARTIFACTS[fmt])
        if fmt == "onnx":
            landscape, portrait = onnx_canvases(config)
            write_onnx(model, os.path.normpath(artifact), landscape)
            if portrait != landscape:
                write_onnx(model, os.path.join(staging, PORTRAIT_ONNX), portrait)
        else:
            _WRITERS[fmt](model, os.path.normpath(artifact))
        description = describe(model, config, fmt)
        if fmt == "litert":
            ops = description["select_tf_ops"] = litert_select_ops(artifact)
            if ops:
                logger.warning(
                    "model.tflite runs %s as Select TF ops: it needs a LiteRT runtime linked with the Flex delegate",
                    ", ".join(ops),
                )
        with open(os.path.join(staging, DESCRIPTION_FILE), "w", encoding="utf-8") as f:
            json.dump(description, f, indent=2)
        _publish(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return os.path.normpath(os.path.join(out_dir, _ARTIFACTS[fmt]))


def export_model(model_dir, fmt, out_dir, svd=None):
    """Export the model folder `model_dir` (written by `detect train`) to out_dir.

    Args:
      model_dir: folder with model.keras and config.yaml.
      fmt: saved_model | onnx | litert.
      out_dir: output folder (see export_detector).
      svd: None, or fc6/fc7 ranks as "1024,256" or (1024, 256): truncate the head first.
    Returns:
      path of the artifact (see export_detector).
    """
    from detect.models.loading import load_model_dir
    from detect.models.svd import parse_ranks, truncate_head

    if fmt not in FORMATS:
        raise DetectError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    _check_out_dir(out_dir)
    if fmt == "onnx":
        _require_onnx()
    ranks = parse_ranks(svd) if isinstance(svd, str) else svd
    model, config = load_model_dir(model_dir)
    if ranks is None and config["roi"].get("head_svd"):
        ranks = tuple(int(r) for r in config["roi"]["head_svd"])
    if ranks is not None:
        model = truncate_head(model, ranks)
    return export_detector(model, config, fmt, out_dir)
