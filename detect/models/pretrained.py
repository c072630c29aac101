"""ImageNet weights through Keras' own download and cache.

The files, URLs and hashes are those keras.applications uses (keras/src/applications/
vgg16.py and resnet.py), fetched with `keras.utils.get_file(..., cache_subdir="models")`
into the cache Keras uses: `$KERAS_HOME/models/`, else `~/.keras/models/`, else (home not
writable) `/tmp/.keras/models/`. A machine with a network downloads once; a machine
without one works from a pre-filled cache; offline with no cached file the error is one
line naming the URL and the cache path.

`load_dense_from_h5` copies named Dense layers out of a Keras "include_top" weights file
(the legacy HDF5 layout: root attribute `layer_names`, one group per layer whose attribute
`weight_names` lists its datasets), so VGG16's fc6/fc7 start from ImageNet fc1/fc2 as in
the Fast R-CNN paper.
"""

import os
import tempfile

import h5py
import keras
import numpy as np

from detect.errors import DetectError

# Module level so tests can point it at a local HTTP server.
WEIGHTS_BASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"

# (backbone, include_top) -> (path under WEIGHTS_BASE_URL, md5 as in keras.applications)
IMAGENET_FILES = {
    ("vgg16", False): ("vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", "6d6bbae143d832006294945121d1f1fc"),
    ("vgg16", True): ("vgg16/vgg16_weights_tf_dim_ordering_tf_kernels.h5", "64373286793e3c8b2b4e3219cbf3544b"),
    ("resnet50", False): (
        "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "4d473c1dd8becc155b73f8504c6f6626",
    ),
    ("resnet101", False): (
        "resnet/resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "88cf7a10940856eca736dc7b7e228a21",
    ),
}


def keras_cache_dir():
    """The folder keras.utils.get_file(cache_subdir="models") stores into.

    Mirrors keras.src.backend.config (KERAS_HOME, else ~/.keras, else /tmp/.keras when the
    home folder is not writable) and get_file's own fallback to /tmp/.keras when that
    folder is not writable; KERAS_HOME is read at call time.
    """
    if "KERAS_HOME" in os.environ:
        base = os.environ["KERAS_HOME"]
    else:
        home = os.path.expanduser("~")
        base = os.path.join(home if os.access(home, os.W_OK) else "/tmp", ".keras")
    base = os.path.expanduser(base)
    try:  # keras.src.backend.config creates its folder on import; do the same
        os.makedirs(base, exist_ok=True)
    except OSError:
        pass
    if not os.access(base, os.W_OK):
        base = os.path.join("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir(), ".keras")
    return os.path.join(base, "models")


def imagenet_url(name, include_top=False):
    """URL of keras.applications' ImageNet weights file for a backbone."""
    return WEIGHTS_BASE_URL + IMAGENET_FILES[(name, include_top)][0]


def imagenet_weights_path(name, include_top=False):
    """Local path of the ImageNet weights file, downloaded into Keras' cache if missing.

    A cached file whose md5 differs is downloaded again (get_file's rule); a downloaded file
    whose md5 differs is an error. Raises DetectError with one line on any failure.
    """
    if (name, include_top) not in IMAGENET_FILES:
        raise DetectError(f"backbone.weights: no ImageNet weights for {name!r}")
    relative, file_hash = IMAGENET_FILES[(name, include_top)]
    file_name = os.path.basename(relative)
    url = imagenet_url(name, include_top)
    cache_dir = keras_cache_dir()
    path = os.path.join(cache_dir, file_name)
    try:
        return keras.utils.get_file(
            file_name, url, file_hash=file_hash, cache_subdir="models", cache_dir=os.path.dirname(cache_dir)
        )
    except ValueError as e:
        if "hash" not in str(e):
            raise
        if os.path.exists(path):
            os.remove(path)
        raise DetectError(
            f"ImageNet weights for {name}: the file downloaded from {url} does not have md5 {file_hash} "
            f"(removed; cache path {path})"
        ) from None
    except Exception as e:  # noqa: BLE001 - get_file wraps every network failure in Exception
        reason = " ".join(str(e).split()) or type(e).__name__
        raise DetectError(
            f"ImageNet weights for {name}: cannot download {url} ({reason}); place {file_name} at {path} "
            "or use backbone.weights: none"
        ) from None


def _weights_group(f):
    # A whole-model file keeps the layer groups under "model_weights".
    return f["model_weights"] if "model_weights" in f else f


def read_h5_layer(path, layer_name):
    """Arrays of one layer of a legacy Keras HDF5 weights file, in `weight_names` order
    (Dense: kernel (in, out), bias (out,))."""
    with h5py.File(path, "r") as f:
        group = _weights_group(f)
        if layer_name not in group:
            raise DetectError(f"{path}: no layer {layer_name!r} in the weights file")
        layer = group[layer_name]
        names = [n.decode("utf8") if isinstance(n, bytes) else n for n in layer.attrs["weight_names"]]
        return [np.asarray(layer[n]) for n in names]


def load_dense_from_h5(model, path, mapping):
    """Set Dense layers of `model` from same-shaped layers of a legacy HDF5 weights file.

    Args:
      model: a Keras model holding the target layers.
      path: the .h5 file (e.g. VGG16's include_top file).
      mapping: {target layer name: source layer name}, e.g. {"fc6": "fc1", "fc7": "fc2"}.
    Raises DetectError naming the layer when a shape differs.
    """
    for target, source in mapping.items():
        arrays = read_h5_layer(path, source)
        layer = model.get_layer(target)
        expected = [tuple(w.shape) for w in layer.weights]
        if [a.shape for a in arrays] != expected:
            raise DetectError(
                f"{path}: layer {source} has shapes {[a.shape for a in arrays]}, {target} needs {expected}"
            )
        layer.set_weights(arrays)
