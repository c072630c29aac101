"""ResNet50-FPN inference time on one 800 x 1333 image, the counterpart of
../shared/peers/torchvision_fpn.py (torchvision's fasterrcnn_resnet50_fpn, random weights).

Builds configs/faster_rcnn/resnet50_fpn_coco.yaml through the public path
(detect.config.load_config -> detect.models.registry.build_model) with random weights and
91 classes with background (as torchvision's num_classes=91): P2-P6 of 256 channels,
anchors 32..512 one per level x 3 ratios, 1000 boxes per level before NMS, NMS 0.7 per
level, 1000 proposals, multi-level 7x7 RoIAlign (sampling ratio 2) over P2-P5, 2-fc 1024.
The image is 800 x 1333 RGB float32 on an 800 x 1344 canvas (torchvision pads to a
multiple of 32 likewise). One tf.function of `predict_step` (the one inference path:
network, proposals, postprocess), traced and warmed up once, then `--runs` timed calls.

Usage: .venv/bin/python scripts/time_fpn_inference.py [--runs 5] [--height 800] [--width 1333]
Prints one JSON line: {"model": "detect resnet50_fpn", "median_s": ..., "runs": [...]}.
"""

import argparse
import json
import os
import statistics
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1333)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np

    import detect  # noqa: F401  (CPU settings made before TensorFlow starts: detect/runtime.py)
    import tensorflow as tf

    from detect.config import load_config
    from detect.models.registry import build_model

    canvas = (-(-args.height // 32) * 32, -(-args.width // 32) * 32)
    config = load_config(os.path.join(ROOT, "configs/faster_rcnn/resnet50_fpn_coco.yaml"),
                         ["backbone.weights=none", f"input.canvas=[{canvas[0]},{canvas[1]}]"])
    tf.keras.utils.set_random_seed(0)
    model = build_model(config, [f"class_{i}" for i in range(1, 91)])
    images = np.zeros((1, *canvas, 3), np.float32)
    images[0, : args.height, : args.width] = np.random.default_rng(0).uniform(0, 255, (args.height, args.width, 3))
    inputs = {"images": tf.constant(images), "image_shape": tf.constant([[args.height, args.width]], tf.int32),
              "scale": tf.ones((1, 2))}
    predict = tf.function(model.predict_step)
    predict(inputs)  # trace + warm-up
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        detections = predict(inputs)
        detections["num_detections"].numpy()
        times.append(time.perf_counter() - start)
    print(json.dumps({"model": "detect resnet50_fpn", "tensorflow": tf.__version__, "image": [args.height, args.width],
                      "canvas": list(canvas), "median_s": round(statistics.median(times), 4),
                      "runs": [round(t, 4) for t in times]}))


if __name__ == "__main__":
    main()
