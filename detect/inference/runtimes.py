"""Which runtime runs a detector at inference: Keras (a model folder of `detect train`)
or ONNX Runtime (a folder of `detect export --format onnx`). Both give a Predictor."""

from detect.errors import DetectError

RUNTIMES = ("keras", "onnx")


def load_predictor(folder, runtime=None, precision=None, min_score=None):
    """A Predictor for `folder`.

    runtime: keras | onnx | None (onnx when the folder is an ONNX export, else keras).
    precision: float32 | bf16 | None (the config's test.precision); keras runtime only.
    min_score: see Predictor (keras runtime; an ONNX export keeps the score threshold it
    was exported with).
    """
    from detect.inference.onnx_runtime import OnnxPredictor, is_onnx_export

    if runtime is None:
        runtime = "onnx" if is_onnx_export(folder) else "keras"
    if runtime not in RUNTIMES:
        raise DetectError(f"runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
    if precision is not None:
        from detect.inference.precision import check_precision

        check_precision(precision)
    if runtime == "onnx":
        return OnnxPredictor.from_dir(folder, precision=precision)
    from detect.inference.predictor import Predictor

    if is_onnx_export(folder):
        raise DetectError(f"{folder} is an ONNX export: run it with --runtime onnx (the Keras runtime reads the "
                          "model folder it was exported from)")
    return Predictor.from_dir(folder, min_score=min_score, precision=precision)
