"""Run a detector over a tf.data split and collect COCO-results detections."""

import time

import numpy as np
from tqdm import tqdm

from detect.inference.predict_function import predict_function

_INPUT_KEYS = ("images", "image_shape", "scale", "proposals")


def detect_function(model):
    """model.predict_step compiled once per input shape: inputs -> NumPy detections."""
    return predict_function(model)


def to_coco_results(detections, image_ids, label_to_category_id, image_sizes=None, mask_threshold=0.5,
                    mask_paste="detectron2"):
    """Padded batch detections (NumPy) -> list of COCO result dicts (xywh, original ids).

    A label whose category id is None (a class of the model the dataset does not have) is
    left out. With `masks` in the detections (Mask R-CNN) each result also gets
    "segmentation", the mask pasted into its original image (image_sizes: (N, 2) (height,
    width) per image) as COCO compressed RLE.
    """
    results = []
    for i, image_id in enumerate(image_ids):
        n = int(detections["num_detections"][i])
        rles = None
        if "masks" in detections and image_sizes is not None:
            from detect.inference.masks import image_masks, to_rle

            height, width = image_sizes[i]
            rles = to_rle(image_masks(detections["masks"][i, :n], detections["boxes"][i, :n], height, width,
                                      mask_threshold, mask_paste))
        for j, (box, score, label) in enumerate(zip(
            detections["boxes"][i, :n], detections["scores"][i, :n], detections["labels"][i, :n]
        )):
            category_id = label_to_category_id(int(label))
            if category_id is None:
                continue
            x1, y1, x2, y2 = (float(v) for v in box)
            result = {
                "image_id": int(image_id),
                "category_id": int(category_id),
                "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                "score": round(float(score), 5),
            }
            if rles is not None:
                result["segmentation"] = rles[j]
            results.append(result)
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
        sizes = None
        if "masks" in detections:
            from detect.inference.masks import mask_paste, mask_threshold, original_size

            sizes = [original_size(c, s) for c, s in zip(np.asarray(batch["image_shape"]), np.asarray(batch["scale"]))]
            threshold = mask_threshold(model)
        results.extend(to_coco_results(detections, ids, label_to_category_id, sizes,
                                       threshold if sizes is not None else 0.5,
                                       mask_paste(model) if sizes is not None else "detectron2"))
        if seen_ids is not None:
            seen_ids.extend(int(i) for i in ids.reshape(-1))
        seen += len(ids)
        bar.update(len(ids))
        if max_images and seen >= max_images:
            break
    bar.close()
    return results, seen, seconds
