"""scripts/gpu_check.py: one clear line and exit status 2 when no GPU is visible; the
synthetic batches have COCO's 800x1333 content on an 800x1344 canvas (or the --image)."""

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
    assert len(lines) == 1 and lines[0].startswith("gpu_check: no GPU visible to tensorflow")
    assert captured.out == ""


def test_synthetic_batches():
    script = load_script()
    train = script.synthetic_batch(2, training=True)
    assert train["images"].shape == (2, 800, 1344, 3)
    assert not train["images"][:, :, 1333:].any() and train["images"][:, :, :1333].any()  # padding
    assert train["image_shape"].tolist() == [[800, 1333], [800, 1333]]
    assert train["gt_boxes"].shape == (2, 3, 4) and (train["gt_boxes"][..., 2] <= 1000).all()
    assert "gt_boxes" not in script.synthetic_batch(1, training=False)
    # --image 600x1000: content 600x1000 on the stride-32 canvas 608x1024.
    args = script.parse_args(["--image", "600x1000", "--backend", "jax"])
    assert (args.image_size, args.canvas, args.backend) == ((600, 1000), (608, 1024), "jax")
    small = script.synthetic_batch(1, training=False, image=args.image_size, canvas=args.canvas)
    assert small["images"].shape == (1, 608, 1024, 3) and not small["images"][:, 600:].any()
