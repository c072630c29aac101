"""detect/compat.py: each use of a Keras / TF internal, pinned to the versions it was
checked against. A failure here means a Keras or TF upgrade changed what we rely on."""

import keras
import numpy as np
import tensorflow as tf

from detect import compat


def test_keras_still_has_the_symbolic_build_hook():
    # BuiltInInit overrides this private method; if Keras renames it, MultiWorkerMirrored
    # training would average a dict of inputs again and fail.
    assert hasattr(keras.Model, "_maybe_symbolic_build")


def test_built_in_init_builds_only_the_optimizer():
    class Tiny(compat.BuiltInInit, keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)
            self.dense.build((None, 3))
            self.built = True

        def call(self, x):
            return self.dense(x)

    model = Tiny()
    model.compile(optimizer="sgd", loss="mse")
    model._maybe_symbolic_build(data_batch=None)
    assert model.optimizer.built
    model.fit(np.ones((4, 3)), np.zeros((4, 2)), verbose=0)


def test_per_worker_logs_unchanged_without_multi_worker():
    model = keras.Sequential([keras.layers.Dense(1)])
    logs = {"loss": tf.constant(1.0)}
    assert compat.per_worker_logs(model, logs) is logs


def test_constructor_kwargs_drops_base_layer_keys():
    assert compat.constructor_kwargs({"trainable": True, "dtype": "float32", "a": 1}) == {"a": 1}


def test_graph_float_ops_counts_a_matmul():
    @tf.function(input_signature=[tf.TensorSpec([2, 3]), tf.TensorSpec([3, 4])])
    def matmul(a, b):
        return a @ b

    # (2 x 3) @ (3 x 4): 2 * 4 outputs, each 3 multiplies + 3 adds = 48 float ops.
    assert compat.graph_float_ops(matmul.get_concrete_function().graph) == 48


def test_tf2onnx_patch_is_found_or_reported():
    import pytest

    pytest.importorskip("onnx", reason="needs the export extra (onnx, tf2onnx): make install-test")  # ONNX path only
    assert compat.patch_tf2onnx() in (True, False)


def test_op_determinism_getter_follows_the_setter():
    # In a fresh process: enabling determinism is global and cannot be undone.
    import subprocess
    import sys

    code = ("import tensorflow as tf; from detect import compat; "
            "assert not compat.op_determinism_enabled(); "
            "tf.config.experimental.enable_op_determinism(); "
            "assert compat.op_determinism_enabled(); print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip().endswith("ok"), result.stderr[-1000:]
