"""The only place that touches Keras / TensorFlow internals.

Each use says why no public API does the job, is guarded by the versions it was checked
against, and has a test (tests/test_compat.py). When a guard fails, the code takes the
public fallback (or fails with a clear message) instead of silently misbehaving.
"""

import importlib
import logging

import keras

logger = logging.getLogger(__name__)

KERAS_VERSION = tuple(int(p) for p in keras.__version__.split(".")[:2])


class _LazyTensorFlow:
    """TensorFlow imported on first use: on the JAX and PyTorch backends the model code
    imports this module on machines without TensorFlow, and none of its TF paths run."""

    def __getattr__(self, attribute):
        return getattr(importlib.import_module("tensorflow"), attribute)


tf = _LazyTensorFlow()


def on_tensorflow():
    """True when Keras runs on TensorFlow (the backend is fixed when Keras is imported)."""
    return keras.backend.backend() == "tensorflow"


def num_replicas():
    """Replicas that each compute a share of the batch: tf.distribute's count on
    TensorFlow, 1 elsewhere (JAX and PyTorch run one replica per process here)."""
    return tf.distribute.get_strategy().num_replicas_in_sync if on_tensorflow() else 1


def constructor_kwargs(config):
    """A saved model config minus the base-Layer keys (`trainable`, `dtype`) that Keras'
    Model.get_config adds and our keyword-only constructors rebuild themselves."""
    config = dict(config)
    for key in ("trainable", "dtype"):
        config.pop(key, None)
    return config


class BuiltInInit:
    """Mixin for models that create every variable in __init__.

    Why: keras.Model.fit builds an unbuilt model symbolically with `_maybe_symbolic_build`
    (private, Keras >= 3.0), which averages a whole input batch across replicas;
    MultiWorkerMirroredStrategy cannot reduce a dict of inputs. Our models are built in
    __init__ and compile no metrics, so only the optimizer still needs its variables,
    created under the strategy's scope. If a later Keras drops the hook, this method is
    simply never called and fit takes its public path.
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)


if on_tensorflow():
    class PerWorkerLogs:
        """Mixin: train/test steps whose logs MultiWorkerMirroredStrategy can reduce
        (see per_worker_logs). Only TensorFlow's trainer has one-argument steps."""

        def train_step(self, data):
            return per_worker_logs(self, super().train_step(data))

        def test_step(self, data):
            return per_worker_logs(self, super().test_step(data))
else:
    class PerWorkerLogs:
        """Nothing to do off TensorFlow: tf.distribute's multi-worker strategy is TF's."""


def per_worker_logs(model, logs):
    """Logs with one axis under MultiWorkerMirroredStrategy.

    Why: Keras averages the logs across workers with strategy.reduce(axis=0), which needs
    an axis to reduce (public behaviour, but a Keras bug for scalar logs).
    """
    if on_tensorflow() and isinstance(model.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return {name: tf.reshape(value, [1]) for name, value in logs.items()}
    return logs


def patch_tf2onnx():
    """Apply Keras' own NumPy >= 2 fixes to tf2onnx, the ones model.export(format="onnx")
    applies. Why: tf2onnx still calls NumPy aliases removed in NumPy 2; Keras ships the
    patch only under keras.src (no public API). Returns False when this Keras lacks it."""
    try:
        from keras.src.export.tf2onnx_lib import patch_tf2onnx as patch
    except ImportError:
        logger.debug("keras %s has no tf2onnx patch; tf2onnx used as installed", keras.__version__)
        return False
    patch()
    return True


def graph_float_ops(graph):
    """Total float ops of a graph from TF's graph profiler (public: tf.compat.v1.profiler).

    Returns None when the profiler fails (e.g. a TF without the v1 profiler)."""
    try:
        profiler = tf.compat.v1.profiler
        options = profiler.ProfileOptionBuilder.float_operation()
        options["output"] = "none"
        level = tf.get_logger().level
        tf.get_logger().setLevel(logging.ERROR)  # the v1 profiler's deprecation notices
        try:
            return float(profiler.profile(graph, options=options).total_float_ops)
        finally:
            tf.get_logger().setLevel(level)
    except Exception as e:  # noqa: BLE001 - any profiler failure is reported by the caller
        logger.warning("TF profiler failed (%s)", e)
        return None


def op_determinism_enabled():
    """Whether tf.config.experimental.enable_op_determinism() is in force.

    Why: TF 2.x exposes the setter but no public getter; the getter lives in
    tensorflow.python.framework.config (checked with TF 2.16-2.21). Without it, False
    (RoIAlign then keeps its fastest kernel, which has no deterministic GPU gradient)."""
    try:
        from tensorflow.python.framework import config
    except ImportError:
        return False
    getter = getattr(config, "is_op_determinism_enabled", None)
    return bool(getter()) if getter is not None else False


def onednn_enabled():
    """Whether TensorFlow runs its oneDNN kernels in this process (None: cannot tell).

    Why: TF decides at start-up from the CPU and TF_ENABLE_ONEDNN_OPTS and has no public
    getter; IsMklEnabled in tensorflow.python.util._pywrap_util_port answers (checked with
    TF 2.16-2.21). Speed reports need the real state, not the variable's default."""
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:
        return None
    getter = getattr(_pywrap_util_port, "IsMklEnabled", None)
    return bool(getter()) if getter is not None else None


_FUSED_DTYPES = ("float16", "float32", "float64")


def fused_keras_momentum(variable, accumulator, learning_rate, gradient, momentum, nesterov=False):
    """Keras SGD's momentum update in one kernel; True when applied, False to fall back.

        accumulator = momentum * accumulator - learning_rate * gradient
        variable += accumulator   (nesterov: += momentum * accumulator - learning_rate * gradient)

    Why: keras.optimizers.SGD spells the update as five element-wise ops, each a pass over
    the variable; for VGG16's 103M-weight fc6 that is ~110 ms of a ~2.2 s CPU step, the
    fused TF kernel ResourceApplyKerasMomentum (a public raw op with exactly Keras' update)
    takes ~50 ms. It needs the variables' resource handles (`keras.Variable.value.handle`,
    checked with Keras 3.15 on TF 2.21). Used only on the TensorFlow backend, for
    dense float gradients and one replica; anything else takes Keras' own update.
    """
    if keras.backend.backend() != "tensorflow" or isinstance(gradient, tf.IndexedSlices):
        return False
    if tf.distribute.has_strategy() and tf.distribute.get_strategy().num_replicas_in_sync > 1:
        return False
    handles = []
    for v in (variable, accumulator):
        v = v.value if isinstance(v, keras.Variable) else v
        handle = getattr(v, "handle", None)
        if handle is None or v.dtype.name not in _FUSED_DTYPES:
            return False
        handles.append(handle)
    dtype = (variable.value if isinstance(variable, keras.Variable) else variable).dtype
    tf.raw_ops.ResourceApplyKerasMomentum(
        var=handles[0], accum=handles[1], lr=tf.cast(learning_rate, dtype), grad=tf.cast(gradient, dtype),
        momentum=tf.cast(momentum, dtype), use_nesterov=bool(nesterov))
    return True


def sublayers(layer):
    """The layers `layer` tracks directly (its attributes and, for models, `layers`).

    Why: Keras has no public way to list a plain Layer's sub-layers (`Model.layers` exists
    for models only); Layer._flatten_layers(include_self=False, recursive=False) does it
    (checked with Keras 3.10-3.15). Without it, a model's public `layers` is the fallback.
    """
    flatten = getattr(layer, "_flatten_layers", None)
    if flatten is not None:
        return list(flatten(include_self=False, recursive=False))
    return list(getattr(layer, "layers", []))
