"""A detector under whichever Keras backend this process runs, for tests/models/test_backends.py:

    KERAS_BACKEND=jax python tests/models/backend_model.py predict MODEL.keras OUT.npz
        load a .keras saved on another backend and write its detections on the fixed batch
        (through detect.inference.predict_function, compiled as evaluate and predict run it);
    KERAS_BACKEND=jax python tests/models/backend_model.py train OUT.keras TRACES.json
        fit 20 steps on batches of two canvas sizes under the backend's compiled step,
        count how often the step is traced (Python runs only while tracing) and save.
"""

import json
import sys

import numpy as np

import detect  # noqa: F401,E402 - Keras' backend before TensorFlow (detect/runtime.py: guard_triton)

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from test_detector import batch, small_model  # noqa: E402

INPUTS = ("images", "image_shape", "scale")


def predict(model_path, out):
    import keras

    import detect.models.detector  # noqa: F401 - registers the detector's classes
    from detect.inference.predict_function import predict_function

    model = keras.saving.load_model(model_path)
    x = batch()
    # The compiled path detect evaluate and predict take (jax.jit on JAX).
    detections = predict_function(model)({k: x[k] for k in INPUTS})
    np.savez(out, **detections)


def _mixed_canvas_batches(steps):
    """A keras.utils.PyDataset of `steps` batches alternating a 64 x 64 and a 64 x 96 canvas."""
    import keras

    square, wide = batch(64), batch(64)
    wide["images"] = np.concatenate([wide["images"], wide["images"][:, :, :32]], axis=2)
    batches = [{k: v for k, v in b.items() if k != "scale"} for b in (square, wide)]

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return steps

        def __getitem__(self, index):
            return (batches[index % 2],)

    return Batches()


def train(model_path, traces_path):
    import keras

    from detect.runtime import jit_compile

    keras.utils.set_random_seed(0)
    model = small_model()
    traces = []
    step = model.train_step

    def counted_step(*args):
        traces.append(1)  # runs once per trace under a compiled step
        return step(*args)

    model.train_step = counted_step
    model.compile(optimizer=keras.optimizers.SGD(0.001), jit_compile=jit_compile())
    history = model.fit(_mixed_canvas_batches(20), epochs=1, verbose=0)
    del model.train_step
    model.save(model_path)
    with open(traces_path, "w") as f:
        json.dump({"traces": len(traces), "loss": [float(v) for v in history.history["loss"]]}, f)


if __name__ == "__main__":
    {"predict": predict, "train": train}[sys.argv[1]](*sys.argv[2:])
