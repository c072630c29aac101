"""COCO mAP during training: puts val_AP and val_AP50 into the epoch logs, so
EarlyStopping, ReduceLROnPlateau and ModelCheckpoint can monitor mAP (mode: max)."""

import contextlib
import io
import logging

import keras

from detect.evaluation.coco_eval import coco_evaluate, ground_truth_for
from detect.evaluation.detections import collect_detections


class CocoMapCallback(keras.callbacks.Callback):
    """Every `every` epochs, detect on the validation pipeline and score with pycocotools.

    Must come before the callbacks that monitor val_AP in the callback list. Epochs that
    are not evaluated repeat the last value, so monitors always find the keys.
    """

    def __init__(self, tf_dataset, dataset, every=1, max_images=None, ground_truth=None):
        super().__init__()
        self.tf_dataset = tf_dataset
        self.dataset = dataset
        # COCO datasets score against their own annotation file (its areas and crowds).
        self.ground_truth = ground_truth
        self.every = max(int(every), 1)
        self.max_images = max_images
        self.last = {"val_AP": 0.0, "val_AP50": 0.0}

    @classmethod
    def from_config(cls, config, tf_dataset, dataset, every=1, max_images=None):
        gt = ground_truth_for(dataset, config["dataset"]["format"], config["dataset"]["val"]["annotations"])
        return cls(tf_dataset, dataset, every=every, max_images=max_images, ground_truth=gt)

    def evaluate(self):
        seen = []
        results, _, _ = collect_detections(
            self.model,
            self.tf_dataset,
            self.dataset.label_to_category_id,
            max_images=self.max_images,
            progress=False,
            seen_ids=seen,
        )
        gt = self.ground_truth or self.dataset.to_coco()
        if self.max_images:
            # The images the pipeline delivered first (grouped by canvas orientation).
            kept = set(seen)
            gt = {**gt, "images": [im for im in gt["images"] if im["id"] in kept]}
            gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] in kept]
            results = [r for r in results if r["image_id"] in kept]
        quiet = logging.getLogger("detect.evaluation")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                metrics = coco_evaluate(gt, results)
        finally:
            quiet.setLevel(level)
        return {"val_AP": metrics["coco"]["AP"], "val_AP50": metrics["coco"]["AP50"]}

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        if (epoch + 1) % self.every == 0:
            self.last = self.evaluate()
        logs.update(self.last)
