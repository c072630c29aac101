"""ImageNet weights through Keras' download and cache: a local HTTP server on 127.0.0.1
stands in for storage.googleapis.com, generated legacy-HDF5 files for Keras' weight files
(their md5 patched into the file table); the offline error is one line naming the URL
and the cache path; fc6/fc7 load from fc1/fc2 of an include_top file."""

import functools
import hashlib
import http.server
import os
import socket
import threading

import h5py
import keras
import numpy as np
import pytest

from detect.errors import DetectError
from detect.models import pretrained
from detect.models.backbones import build_backbone, fc_head


def write_legacy_h5(path, layers):
    """A Keras legacy weights file: {layer name: [arrays]} -> root attr layer_names, one
    group a layer with attr weight_names ("name/kernel:0", "name/bias:0"), as in
    keras.applications' files."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [n.encode("utf8") for n in layers]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for name, arrays in layers.items():
            group = f.create_group(name)
            suffixes = ("kernel:0", "bias:0")[: len(arrays)]
            weight_names = [f"{name}/{s}" for s in suffixes]
            group.attrs["weight_names"] = [w.encode("utf8") for w in weight_names]
            for weight_name, array in zip(weight_names, arrays):
                group[weight_name] = array
    return path


def md5(path):
    return hashlib.md5(open(path, "rb").read()).hexdigest()


def dense_arrays(rng, n_in, n_out):
    return [rng.normal(0, 0.01, (n_in, n_out)).astype("float32"), rng.normal(0, 0.01, n_out).astype("float32")]


@pytest.fixture
def server(tmp_path, monkeypatch):
    """Serves tmp_path/www on 127.0.0.1; WEIGHTS_BASE_URL points at it; KERAS_HOME is
    tmp_path/keras. Yields (www folder, list of requested paths)."""
    www = tmp_path / "www"
    www.mkdir()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(pretrained, "WEIGHTS_BASE_URL", f"http://127.0.0.1:{httpd.server_address[1]}/")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    yield www, requests
    httpd.shutdown()
    httpd.server_close()


def publish(www, monkeypatch, key, layers):
    """Write a generated weights file where the server serves IMAGENET_FILES[key]; patch its md5."""
    relative, _ = pretrained.IMAGENET_FILES[key]
    path = write_legacy_h5(str(www / relative), layers)
    monkeypatch.setitem(pretrained.IMAGENET_FILES, key, (relative, md5(path)))
    return path


def test_urls_and_hashes_are_those_of_keras_applications():
    from keras.src.applications import resnet, vgg16

    assert pretrained.imagenet_url("vgg16") == vgg16.WEIGHTS_PATH_NO_TOP
    assert pretrained.imagenet_url("vgg16", include_top=True) == vgg16.WEIGHTS_PATH
    assert pretrained.imagenet_url("resnet50") == resnet.BASE_WEIGHTS_PATH + os.path.basename(
        pretrained.IMAGENET_FILES[("resnet50", False)][0]
    )
    assert pretrained.IMAGENET_FILES[("resnet50", False)][1] == resnet.WEIGHTS_HASHES["resnet50"][1]
    assert pretrained.IMAGENET_FILES[("resnet101", False)][1] == resnet.WEIGHTS_HASHES["resnet101"][1]
    assert pretrained.IMAGENET_FILES[("vgg16", False)][1] == "6d6bbae143d832006294945121d1f1fc"
    assert pretrained.IMAGENET_FILES[("vgg16", True)][1] == "64373286793e3c8b2b4e3219cbf3544b"


def test_downloads_once_into_keras_cache(server, monkeypatch, tmp_path):
    www, requests = server
    rng = np.random.default_rng(0)
    source = publish(www, monkeypatch, ("vgg16", True), {"fc1": dense_arrays(rng, 12, 8)})
    path = pretrained.imagenet_weights_path("vgg16", include_top=True)
    assert path == str(tmp_path / "keras" / "models" / "vgg16_weights_tf_dim_ordering_tf_kernels.h5")
    assert open(path, "rb").read() == open(source, "rb").read()
    assert requests == ["/vgg16/vgg16_weights_tf_dim_ordering_tf_kernels.h5"]
    # Second call: the cached file's md5 matches, nothing is fetched.
    assert pretrained.imagenet_weights_path("vgg16", include_top=True) == path
    assert len(requests) == 1


def test_wrong_hash_is_an_error_and_leaves_no_file(server, monkeypatch, tmp_path):
    www, _ = server
    publish(www, monkeypatch, ("vgg16", True), {"fc1": dense_arrays(np.random.default_rng(0), 4, 2)})
    relative, _ = pretrained.IMAGENET_FILES[("vgg16", True)]
    monkeypatch.setitem(pretrained.IMAGENET_FILES, ("vgg16", True), (relative, "0" * 32))
    with pytest.raises(DetectError, match="does not have md5 0{32}") as info:
        pretrained.imagenet_weights_path("vgg16", include_top=True)
    assert "\n" not in str(info.value)
    assert not os.listdir(tmp_path / "keras" / "models")


def test_corrupt_cached_file_is_downloaded_again(server, monkeypatch, tmp_path):
    www, requests = server
    source = publish(www, monkeypatch, ("vgg16", True), {"fc1": dense_arrays(np.random.default_rng(0), 4, 2)})
    cached = tmp_path / "keras" / "models" / "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"truncated")
    assert pretrained.imagenet_weights_path("vgg16", include_top=True) == str(cached)
    assert cached.read_bytes() == open(source, "rb").read() and len(requests) == 1


def test_offline_without_cache_is_one_line_naming_url_and_cache_path(tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(pretrained, "WEIGHTS_BASE_URL", f"http://127.0.0.1:{port}/")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with pytest.raises(DetectError) as info:
        build_backbone("vgg16", weights="imagenet")
    message = str(info.value)
    url = f"http://127.0.0.1:{port}/vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    cache = str(tmp_path / "keras" / "models" / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5")
    assert url in message and cache in message and "\n" not in message


def test_cache_falls_back_to_tmp_when_home_is_not_writable(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    assert pretrained.keras_cache_dir() == str(tmp_path / "keras" / "models")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p).startswith(str(tmp_path)) else real_access(p, mode))
    assert pretrained.keras_cache_dir() == "/tmp/.keras/models"  # get_file's fallback
    monkeypatch.delenv("KERAS_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert pretrained.keras_cache_dir() == "/tmp/.keras/models"  # keras config's fallback


def test_dense_layers_load_by_name_and_check_shapes(tmp_path):
    rng = np.random.default_rng(1)
    fc1, fc2 = dense_arrays(rng, 2 * 2 * 3, 8), dense_arrays(rng, 8, 8)
    path = write_legacy_h5(str(tmp_path / "top.h5"), {"fc1": fc1, "fc2": fc2, "predictions": dense_arrays(rng, 8, 5)})
    head = fc_head((2, 2, 3), 8, dropout=0.5)
    pretrained.load_dense_from_h5(head, path, {"fc6": "fc1", "fc7": "fc2"})
    for layer, arrays in (("fc6", fc1), ("fc7", fc2)):
        for weight, array in zip(head.get_layer(layer).get_weights(), arrays):
            np.testing.assert_array_equal(weight, array)
    with pytest.raises(DetectError, match="layer fc1 has shapes"):
        pretrained.load_dense_from_h5(fc_head((2, 2, 4), 8), path, {"fc6": "fc1"})
    with pytest.raises(DetectError, match="no layer 'fc9'"):
        pretrained.load_dense_from_h5(head, path, {"fc6": "fc9"})


def test_fc_head_dropout_only_in_training():
    head = fc_head((2, 2, 3), 64, dropout=0.5)
    assert [layer.name for layer in head.layers if isinstance(layer, keras.layers.Dropout)] == ["drop6", "drop7"]
    x = np.ones((4, 2, 2, 3), "float32")
    np.testing.assert_array_equal(head(x, training=False), head(x, training=False))
    # Training: about half the fc7 outputs are zeroed, the rest doubled (inverted dropout).
    assert (head(x, training=True).numpy() == 0).mean() > (head(x, training=False).numpy() == 0).mean()
    assert not any(isinstance(layer, keras.layers.Dropout) for layer in fc_head((2, 2, 3), 8).layers)


def test_tiny_backbone_has_no_dropout_by_default():
    _, head, _ = build_backbone("tiny", width=4, head_dim=8)
    assert not any(isinstance(layer, keras.layers.Dropout) for layer in head.layers)


@pytest.mark.slow
def test_vgg16_imagenet_from_populated_cache_starts_fc6_fc7_from_fc1_fc2(tmp_path, monkeypatch):
    """Full-size files (VGG16 conv layers, fc1 25088 x 4096, fc2 4096 x 4096) written into
    the Keras cache, as after a download; nothing is fetched (the base URL is unreachable)."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(pretrained, "WEIGHTS_BASE_URL", "http://127.0.0.1:9/")
    models = tmp_path / "keras" / "models"
    rng = np.random.default_rng(2)
    vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=(None, None, 3))
    conv = {layer.name: [rng.normal(0, 0.01, w.shape).astype("float32") for w in layer.weights] for layer in vgg.layers if layer.weights}
    del vgg
    fc = {"fc1": [rng.random((7 * 7 * 512, 4096), dtype="float32") * 0.01, rng.random(4096, dtype="float32")],
          "fc2": dense_arrays(rng, 4096, 4096)}
    for key, layers in (((("vgg16", False)), conv), (("vgg16", True), {**conv, **fc})):
        relative, _ = pretrained.IMAGENET_FILES[key]
        path = write_legacy_h5(str(models / os.path.basename(relative)), layers)
        monkeypatch.setitem(pretrained.IMAGENET_FILES, key, (relative, md5(path)))
    trunk, head, info = build_backbone("vgg16", weights="imagenet")
    for layer, source in (("fc6", "fc1"), ("fc7", "fc2")):
        for weight, array in zip(head.get_layer(layer).get_weights(), fc[source]):
            np.testing.assert_array_equal(weight, array)
    kernel = [w for w in trunk.weights if "block1_conv1" in w.path and "kernel" in w.path][0]
    np.testing.assert_array_equal(kernel.numpy(), conv["block1_conv1"][0])
    assert [layer.name for layer in head.layers if isinstance(layer, keras.layers.Dropout)] == ["drop6", "drop7"]
    with pytest.raises(DetectError, match="needs roi size 7, head_dim 4096 and no SVD"):
        build_backbone("vgg16", weights="imagenet", head_dim=1024)


def test_rcnn_vgg16_fine_tuning_network_has_the_dropout_head():
    from detect.models.rcnn import RCNN

    model = RCNN(class_names=["a", "b"], canvas_size=(64, 64), backbone="vgg16", crop_size=64, context=4,
                 head_dim=16, chunk_size=4, regions_per_image=4)
    assert [layer.name for layer in model.head.layers if isinstance(layer, keras.layers.Dropout)] == ["drop6", "drop7"]
    crops = np.random.default_rng(0).uniform(0, 255, (4, 64, 64, 3)).astype("float32")
    test_a, _ = model.crop_features(crops, training=False)
    test_b, _ = model.crop_features(crops, training=False)
    np.testing.assert_array_equal(test_a, test_b)  # no dropout at test time


def test_offline_train_through_the_cli_is_one_error_line(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from detect.cli import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(pretrained, "WEIGHTS_BASE_URL", f"http://127.0.0.1:{port}/")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    fixture = os.path.join(root, "tests/fixtures/coco")
    config = tmp_path / "config.yaml"
    config.write_text(
        f"_base_: {os.path.join(root, 'configs/faster_rcnn/tiny_shapes.yaml')}\n"
        "backbone: {name: vgg16, weights: imagenet}\n"
        "training: {batch_size: 1}\n"
        "dataset:\n"
        f"  train: {{annotations: {fixture}/annotations/instances.json, images: {fixture}/images}}\n"
        f"  val: {{annotations: {fixture}/annotations/instances.json, images: {fixture}/images}}\n"
    )
    result = CliRunner().invoke(main, ["train", str(config), "--out", str(tmp_path / "model")])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    url = f"http://127.0.0.1:{port}/vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert lines[0].startswith("error: ImageNet weights for vgg16: cannot download " + url)
    assert str(tmp_path / "keras" / "models") in lines[0]
