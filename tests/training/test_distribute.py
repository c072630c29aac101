"""tf.distribute: MirroredStrategy over two logical CPUs matches the default strategy, and
MultiWorkerMirroredStrategy trains with two worker processes on 127.0.0.1."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    sys.path.insert(0, os.path.join(sys.argv[1], "tests", "models"))
    from test_detector import batch, small_model

    # Sampling everything makes the loss independent of random draws:
    # 4 x 4 cells x 6 anchors = 96 anchors; 50 proposals + 4 gt rows < 64 RoIs.
    kwargs = dict(rpn=dict(batch_size=96, positive_fraction=1.0, post_nms_top_n_train=50),
                  roi=dict(batch_size=64, positive_fraction=1.0))
    data = batch()
    data = {k: np.concatenate([v, v]) for k, v in data.items()}  # global batch 4
    losses = {}
    weights = None
    for name, strategy in (("default", tf.distribute.get_strategy()),
                           ("mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = small_model(**kwargs)
            if weights is None:
                weights = model.get_weights()
            model.set_weights(weights)
            model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0))
        history = model.fit(data, batch_size=4, epochs=1, verbose=0, shuffle=False)
        losses[name] = {k: float(v[0]) for k, v in history.history.items()}
        losses[name]["replicas"] = strategy.num_replicas_in_sync
    print(json.dumps(losses))
    """
)


def test_mirrored_two_cpus_matches_default_strategy():
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT, ROOT], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    losses = json.loads(result.stdout.strip().splitlines()[-1])
    assert losses["mirrored"]["replicas"] == 2
    for key in ("loss", "rpn_cls_loss", "rpn_box_loss", "roi_cls_loss", "roi_box_loss"):
        assert losses["mirrored"][key] == pytest.approx(losses["default"][key], rel=1e-4, abs=1e-6), key


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_multi_worker_training_two_local_workers(tmp_path):
    from detect.data.shapes import generate_shapes

    data = tmp_path / "shapes"
    generate_shapes(str(data), num_images=24, image_size=64, seed=5, progress=False)
    config = {
        "_base_": os.path.join(ROOT, "configs/faster_rcnn/tiny_shapes.yaml"),
        "backbone": {"width": 8},
        "dataset": {
            "train": {"annotations": str(data / "annotations/train.json"), "images": str(data / "images")},
            "val": {"annotations": str(data / "annotations/val.json"), "images": str(data / "images")},
        },
        "input": {"min_size": 64, "max_size": 64},
        "rpn": {"channels": 16, "pre_nms_top_n_train": 100, "post_nms_top_n_train": 32, "post_nms_top_n_test": 16},
        "roi": {"batch_size": 16, "head_dim": 32},
        "training": {"epochs": 2, "batch_size": 4, "warmup_steps": 1, "time_budget_minutes": None, "val_every": 1},
        "callbacks": {"tensorboard": {"enabled": False}},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "model"
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "DETECT_QUIET": "1"}
        cmd = [sys.executable, "-m", "detect.cli", "train", str(path), "--out", str(out), "--strategy", "multi_worker"]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (stdout, stderr) in zip(procs, outputs):
        assert proc.returncode == 0, stderr[-3000:]
    assert (out / "model.keras").is_file()
    assert (out / "history.csv").is_file()
    assert not (out / ".worker1").exists()  # the other worker's scratch folder is removed
