"""`predict_step` compiled for the Keras backend that runs: inputs -> NumPy detections.

TensorFlow: a tf.function (with an input signature, traced once; without, one trace per
input shape). JAX: jax.jit of `predict_step` run statelessly on the model's variables (Keras'
own JAX predict step takes (state, data) and returns `call`'s outputs, not detections), one
program per input shape. PyTorch: Keras' `predict_on_batch` (eager, under no_grad).
"""

import keras
import numpy as np


class PredictFunction:
    """Callable: dict of batched inputs (NumPy or tensors) -> dict of NumPy outputs."""

    def __init__(self, model, input_signature=None):
        self.model = model
        self._traced = None
        self._jitted = None
        if keras.backend.backend() == "jax":
            import jax

            self._jitted = jax.jit(self._stateless_predict)
        elif keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            if input_signature is None:
                self._traced = tf.function(model.predict_step, reduce_retracing=True)
            else:
                self._traced = tf.function(model.predict_step, input_signature=[input_signature])

    def _stateless_predict(self, trainable, non_trainable, inputs):
        model = self.model
        mapping = list(zip(model.trainable_variables, trainable)) + list(zip(model.non_trainable_variables,
                                                                             non_trainable))
        with keras.StatelessScope(state_mapping=mapping):
            return model.predict_step(inputs)

    def __call__(self, inputs):
        if self._traced is not None:
            return {k: v.numpy() for k, v in self._traced(inputs).items()}
        inputs = {k: np.asarray(v) for k, v in inputs.items()}
        if self._jitted is not None:
            outputs = self._jitted([v.value for v in self.model.trainable_variables],
                                   [v.value for v in self.model.non_trainable_variables], inputs)
            return {k: np.asarray(v) for k, v in outputs.items()}
        return self.model.predict_on_batch(inputs)

    def tracing_count(self):
        """Traces so far on TensorFlow; None where Keras compiles the step itself."""
        return None if self._traced is None else self._traced.experimental_get_tracing_count()


def predict_function(model, input_signature=None):
    """A PredictFunction of `model` (input_signature: a dict of tf.TensorSpec, TF only)."""
    return PredictFunction(model, input_signature)


def traced(fn):
    """`fn` traced once per input signature on TensorFlow (tf.function with reduced
    retracing); as it is, run eagerly, on the other backends. Inputs should be backend
    tensors (keras.ops.convert_to_tensor), so TensorFlow traces by shape, not by value."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, reduce_retracing=True)
    return fn
