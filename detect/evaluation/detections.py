"""Run a detector over a tf.data split and collect COCO-results detections."""

import time

import numpy as np
from tqdm import tqdm

from detect.inference.predict_function import predict_function

_INPUT_KEYS = ("images", "image_shape", "scale", "proposals")


def detect_function(model):
    """model.predict_step compiled once per input shape: inputs -> NumPy detections."""
    return predict_function(model)


def to_coco_results(detections, image_ids, label_to_category_id):
    """Padded batch detections (NumPy) -> list of COCO result dicts (xywh, original ids).

    A label whose category id is None (a class of the model the dataset does not have) is
    left out."""
    results = []
    for i, image_id in enumerate(image_ids):
        n = int(detections["num_detections"][i])
        for box, score, label in zip(
            detections["boxes"][i, :n], detections["scores"][i, :n], detections["labels"][i, :n]
        ):
            category_id = label_to_category_id(int(label))
            if category_id is None:
                continue
            x1, y1, x2, y2 = (float(v) for v in box)
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": int(category_id),
                    "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                    "score": round(float(score), 5),
                }
            )
    return results


def collect_detections(model, tf_dataset, label_to_category_id, total=None, max_images=None, progress=True,
                       seen_ids=None):
    """Detections for every image of a pipeline; returns (results, num_images, seconds).

    `seen_ids`: a list the ids of the images run are appended to (pipelines deliver
    images grouped by canvas orientation, not in record order)."""
    run = detect_function(model)
    results, seen, seconds = [], 0, 0.0
    bar = tqdm(total=total, unit="img", desc="detect", disable=not progress, leave=False)
    for batch in tf_dataset:
        inputs = {k: batch[k] for k in _INPUT_KEYS if k in batch}
        start = time.perf_counter()
        detections = run(inputs)
        seconds += time.perf_counter() - start
        ids = np.asarray(batch["image_id"])
        results.extend(to_coco_results(detections, ids, label_to_category_id))
        if seen_ids is not None:
            seen_ids.extend(int(i) for i in ids.reshape(-1))
        seen += len(ids)
        bar.update(len(ids))
        if max_images and seen >= max_images:
            break
    bar.close()
    return results, seen, seconds
