"""scripts/gpu_check.py: one clear line and exit status 2 when no GPU is visible; the
synthetic batches have the paper's 600x1000 content on a 608x1024 canvas."""

import importlib.util
import os

import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", os.path.join(ROOT, "scripts", "gpu_check.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_gpu_is_one_line_and_exit_2(monkeypatch, capsys):
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
    assert load_script().main([]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: no GPU visible to TensorFlow")
    assert captured.out == ""


def test_synthetic_batches():
    script = load_script()
    train = script.synthetic_batch(2, training=True)
    assert train["images"].shape == (2, 608, 1024, 3)
    assert not train["images"][:, 600:].any() and not train["images"][:, :, 1000:].any()  # padding
    assert train["image_shape"].tolist() == [[600, 1000], [600, 1000]]
    assert train["gt_boxes"].shape == (2, 3, 4) and (train["gt_boxes"][..., 2] <= 1000).all()
    assert "gt_boxes" not in script.synthetic_batch(1, training=False)
