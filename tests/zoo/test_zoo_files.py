"""The converter's file handling: download into the cache with torchvision's hash check (a
local HTTP server stands in for download.pytorch.org), offline and bad-file errors, and
checkpoints that do not fit the architecture."""

import functools
import hashlib
import http.server
import os
import threading

import numpy as np
import pytest

from detect.errors import DetectError
from detect.zoo import torchvision as tvz


@pytest.fixture()
def server(tmp_path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "www"))
    (tmp_path / "www").mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield tmp_path / "www", f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _publish(www, content, prefix=None):
    prefix = prefix or hashlib.sha256(content).hexdigest()[:8]
    name = f"fasterrcnn_resnet50_fpn_coco-{prefix}.pth"
    (www / name).write_bytes(content)
    return name


def test_download_lands_in_the_cache_and_passes_the_hash_check(server, tmp_path, monkeypatch):
    www, base = server
    name = _publish(www, b"checkpoint bytes")
    monkeypatch.setitem(tvz.ARCHS, "fasterrcnn_resnet50_fpn", (f"{base}/{name}", 37.0))
    path = tvz.checkpoint_file("fasterrcnn_resnet50_fpn", cache_dir=str(tmp_path / "cache" / "models"))
    assert path == str(tmp_path / "cache" / "models" / name)
    assert open(path, "rb").read() == b"checkpoint bytes"
    # A second call finds the file and does not download again.
    (www / name).unlink()
    assert tvz.checkpoint_file("fasterrcnn_resnet50_fpn", cache_dir=str(tmp_path / "cache" / "models")) == path


def test_a_file_whose_hash_differs_from_its_name_is_refused(server, tmp_path, monkeypatch):
    www, base = server
    name = _publish(www, b"damaged", prefix="00000000")
    monkeypatch.setitem(tvz.ARCHS, "fasterrcnn_resnet50_fpn", (f"{base}/{name}", 37.0))
    with pytest.raises(DetectError, match="does not match 00000000.*damaged download"):
        tvz.checkpoint_file("fasterrcnn_resnet50_fpn", cache_dir=str(tmp_path / "cache"))


def test_offline_says_what_to_download_and_where(tmp_path, monkeypatch):
    monkeypatch.setitem(tvz.ARCHS, "fasterrcnn_resnet50_fpn",
                        ("http://127.0.0.1:9/fasterrcnn_resnet50_fpn_coco-258fb6c6.pth", 37.0))
    with pytest.raises(DetectError) as error:
        tvz.checkpoint_file("fasterrcnn_resnet50_fpn", cache_dir=str(tmp_path / "models"))
    message = str(error.value)
    assert "\n" not in message
    assert "http://127.0.0.1:9/fasterrcnn_resnet50_fpn_coco-258fb6c6.pth" in message
    assert str(tmp_path / "models" / "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth") in message


def test_state_dict_files(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "ok.pth"
    torch.save({"a.weight": torch.ones(2, 3), "bn.num_batches_tracked": torch.tensor(5)}, path)
    state = tvz.read_state_dict(str(path))
    assert list(state) == ["a.weight"]  # BatchNorm's step counter is no weight
    np.testing.assert_array_equal(state["a.weight"], np.ones((2, 3), np.float32))
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"model": {"a.weight": torch.zeros(1)}, "epoch": 3}, wrapped)  # a training checkpoint
    assert list(tvz.read_state_dict(str(wrapped))) == ["a.weight"]
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(DetectError, match="junk.pth: not a readable PyTorch checkpoint"):
        tvz.read_state_dict(str(tmp_path / "junk.pth"))
    with pytest.raises(DetectError, match="file not found"):
        tvz.read_state_dict(str(tmp_path / "missing.pth"))


def test_a_checkpoint_of_another_architecture_names_the_first_key_that_does_not_fit():
    model, _ = tvz.build_zoo_model("fasterrcnn_mobilenet_v3_large_fpn")
    state = {"backbone.body.conv1.weight": np.zeros((64, 3, 7, 7), np.float32)}  # a ResNet's stem
    with pytest.raises(DetectError, match="has no `backbone.body.0.0.weight`"):
        tvz.assign_weights(model, state, "resnet.pth")


def test_every_coco_id_has_a_name():
    names = tvz.COCO_CLASS_NAMES
    assert len(names) == 90 and len(set(names)) == 90
    assert names[0] == "person" and names[89] == "toothbrush"
    assert names[11] == "N/A-12" and names[12] == "stop sign"  # COCO id 12 is unused, 13 is a stop sign


def test_a_coco_detector_evaluates_on_a_dataset_of_some_coco_classes(tmp_path):
    """Labels map by name: the dataset's `dog` (category id 7 in its own file) is COCO's id 18."""
    import json

    import cv2

    from detect.config import dump_config
    from detect.evaluation.evaluate_model import evaluate_model

    model, config = tvz.build_zoo_model("fasterrcnn_mobilenet_v3_large_fpn", ["test.score_threshold=0.0"])
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    model.save(str(model_dir / "model.keras"))
    images = tmp_path / "images"
    images.mkdir()
    for i in (1, 2):
        cv2.imwrite(str(images / f"{i}.jpg"), np.full((48, 64, 3), 90 * i, np.uint8))
    coco = {"images": [{"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 48} for i in (1, 2)],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [4, 4, 30, 20], "area": 600,
                             "iscrowd": 0}],
            "categories": [{"id": 3, "name": "person"}, {"id": 7, "name": "dog"}]}
    (tmp_path / "val.json").write_text(json.dumps(coco))
    config["dataset"]["val"] = {"annotations": str(tmp_path / "val.json"), "images": str(images), "split": None}
    dump_config(config, str(model_dir / "config.yaml"))
    from detect.data.splits import load_split
    from detect.evaluation.evaluate_model import label_mapping

    to_category = label_mapping(tvz.COCO_CLASS_NAMES, load_split(config, "val"))
    assert (to_category(1), to_category(18), to_category(2)) == (3, 7, None)  # person, dog, bicycle
    metrics = evaluate_model(str(model_dir), split="val", progress=False, batch_size=2)
    detections = json.load(open(tmp_path / "model" / "eval_val" / "detections.json"))
    assert {d["category_id"] for d in detections} <= {3, 7}  # only the dataset's classes are scored
    assert 0.0 <= metrics["coco"]["AP"] <= 1.0
