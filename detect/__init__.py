"""detect: the R-CNN family (R-CNN, Fast R-CNN, Faster R-CNN) in Keras 3 on TensorFlow."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from detect import runtime  # noqa: E402

# Before TensorFlow is imported: it reads the oneDNN setting once (see detect/runtime.py).
runtime.configure()

__version__ = "0.1.0"


def load(model_dir):
    """Load a trained detector folder; returns a Predictor with `.predict(image)`."""
    from detect.inference.predictor import Predictor

    return Predictor.from_dir(model_dir)
