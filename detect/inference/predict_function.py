"""`predict_step` compiled for the Keras backend that runs: inputs -> NumPy detections.

TensorFlow: a tf.function (with an input signature, traced once; without, one trace per
input shape). JAX and PyTorch: Keras' own `predict_on_batch`, which compiles the step as
the model was compiled (jax.jit on JAX) and caches one program per input shape.
"""

import keras
import numpy as np


class PredictFunction:
    """Callable: dict of batched inputs (NumPy or tensors) -> dict of NumPy outputs."""

    def __init__(self, model, input_signature=None):
        self.model = model
        self._traced = None
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            if input_signature is None:
                self._traced = tf.function(model.predict_step, reduce_retracing=True)
            else:
                self._traced = tf.function(model.predict_step, input_signature=[input_signature])

    def __call__(self, inputs):
        if self._traced is not None:
            return {k: v.numpy() for k, v in self._traced(inputs).items()}
        return self.model.predict_on_batch({k: np.asarray(v) for k, v in inputs.items()})

    def tracing_count(self):
        """Traces so far on TensorFlow; None where Keras compiles the step itself."""
        return None if self._traced is None else self._traced.experimental_get_tracing_count()


def predict_function(model, input_signature=None):
    """A PredictFunction of `model` (input_signature: a dict of tf.TensorSpec, TF only)."""
    return PredictFunction(model, input_signature)
