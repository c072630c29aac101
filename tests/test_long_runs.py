"""Long runs keep memory flat: predicting the 1,000 frames of a video and evaluating 1,000
images with a small untrained model. Resident memory (VmRSS) is read after every batch;
from the 100th frame / image to the end it may grow by at most 10%.

Frames are 256x192 so that keeping one decoded frame per frame (147 KB, 144 MiB over the
run) would cross the margin of a process of about 1 GiB; so would retracing the model.
What grows with the input by design (the detections kept for scoring, a few hundred bytes
per image here) stays far below it.
"""

import json
import os

import cv2
import numpy as np
import pytest
from PIL import Image


FRAMES = 1000
WARM = 100  # memory is measured from here on: the first batches trace and fill caches
GROWTH = 1.10


def rss_bytes():
    """Resident set size of this process, from /proc/self/status (Linux)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS line in /proc/self/status")


class MemoryLog:
    """RSS after each batch, keyed by the number of frames or images done so far."""

    def __init__(self):
        self.done = 0
        self.samples = {}

    def add(self, count):
        self.done += count
        self.samples[self.done] = rss_bytes()

    def check(self, total):
        assert self.done == total
        start = min(n for n in self.samples if n >= WARM)
        baseline = self.samples[start]
        after = {n: m for n, m in self.samples.items() if n >= start}
        worst = max(after.values())
        # e.g. 900 MiB at frame 100 allows up to 990 MiB until the last frame.
        assert worst <= GROWTH * baseline, (
            f"RSS grew from {baseline / 2**20:.0f} MiB at {start} to {worst / 2**20:.0f} MiB "
            f"(last {self.samples[total] / 2**20:.0f} MiB at {total})"
        )
        return baseline, worst


@pytest.fixture(scope="module")
def model_dir(make_model_dir):
    return str(make_model_dir(["box"]))


WIDTH, HEIGHT = 256, 192


def moving_square(index):
    """A (HEIGHT, WIDTH, 3) frame with a 64-px square at x = 4 * index mod 192."""
    frame = np.full((HEIGHT, WIDTH, 3), 30, np.uint8)
    x = 4 * index % (WIDTH - 64)
    frame[64:128, x : x + 64] = (40, 200, 90)
    return frame


def test_predicting_1000_video_frames_keeps_memory_flat(tmp_path, model_dir, monkeypatch):
    from detect.inference.predictor import Predictor
    from detect.inference.run import run_predict

    video = str(tmp_path / "clip.mp4")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (WIDTH, HEIGHT))
    for i in range(FRAMES):
        writer.write(moving_square(i))
    writer.release()

    memory = MemoryLog()
    predict_batch = Predictor.predict_batch

    def measured(self, images, *args, **kwargs):
        out = predict_batch(self, images, *args, **kwargs)
        memory.add(len(images))
        return out

    monkeypatch.setattr(Predictor, "predict_batch", measured)
    result = run_predict(model_dir, [video], str(tmp_path / "out"), score_threshold=0.0, batch_size=4)
    assert result["frames"] == FRAMES
    memory.check(FRAMES)
    with open(tmp_path / "out" / "clip.jsonl", encoding="utf-8") as f:
        assert sum(1 for _ in f) == FRAMES


def test_evaluating_1000_images_keeps_memory_flat(tmp_path, model_dir, monkeypatch):
    import detect.evaluation.detections as detections_module
    from detect.evaluation.evaluate_model import evaluate_model

    images, annotations = [], []
    for i in range(FRAMES):
        name = f"{i:04d}.jpg"
        Image.fromarray(moving_square(i)).save(tmp_path / name, quality=85)
        images.append({"id": i + 1, "file_name": name, "width": WIDTH, "height": HEIGHT})
        box = [4 * i % (WIDTH - 64), 64, 64, 64]  # xywh of the square drawn by moving_square
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": box, "area": 64 * 64,
                            "iscrowd": 0})
    ann = tmp_path / "val.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations,
                               "categories": [{"id": 1, "name": "box"}]}))
    config = tmp_path / "eval.yaml"
    config.write_text(json.dumps({"dataset": {"val": {"annotations": str(ann)}},
                                  "input": {"min_size": 64, "max_size": 64},
                                  "rpn": {"anchor_sizes": [16, 32], "channels": 16, "post_nms_top_n_test": 20},
                                  "roi": {"head_dim": 32},
                                  "test": {"score_threshold": 0.0, "max_detections": 5}}))

    memory = MemoryLog()
    to_coco_results = detections_module.to_coco_results

    def measured(detections, image_ids, *args, **kwargs):
        out = to_coco_results(detections, image_ids, *args, **kwargs)
        memory.add(len(image_ids))
        return out

    monkeypatch.setattr(detections_module, "to_coco_results", measured)
    metrics = evaluate_model(model_dir, config_path=str(config), split="val", out_dir=str(tmp_path / "eval"),
                             batch_size=8, progress=False)
    assert metrics["num_images"] == FRAMES
    baseline, _ = memory.check(FRAMES)
    # Scoring (pycocotools, plots) after the last batch stays within the margin too.
    assert rss_bytes() <= GROWTH * baseline
    assert os.path.isfile(tmp_path / "eval" / "metrics.json")
