"""detect: the R-CNN family (R-CNN, Fast R-CNN, Faster R-CNN) in Keras 3 on TensorFlow."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from detect import runtime  # noqa: E402

# Before TensorFlow is imported: it reads the oneDNN setting once (see detect/runtime.py).
runtime.configure()
# PyPI's CUDA builds of torch bring triton, whose extension crashes the process when it
# loads after TensorFlow (see runtime.guard_triton).
runtime.guard_triton()

__version__ = "0.1.0"


def load(model_dir, precision=None, runtime=None):
    """Load a trained detector folder, or an ONNX export of one; returns a Predictor with
    `.predict(image)`. precision: float32 | bf16 (None: the config's test.precision);
    runtime: keras | onnx (None: onnx for a folder of `detect export --format onnx`)."""
    from detect.inference.runtimes import load_predictor

    return load_predictor(model_dir, runtime=runtime, precision=precision)
