"""Load a trained model folder and run it on images: `detect.load(model_dir).predict(image)`."""

import os

import numpy as np
import tensorflow as tf

from detect.data.images import read_image
from detect.data.pipeline import prepare_image
from detect.errors import DetectError


def load_model_dir(model_dir):
    """(model, resolved config) from a folder written by `detect train`."""
    import yaml

    from detect.config import from_dict

    model_path = os.path.join(model_dir, "model.keras")
    config_path = os.path.join(model_dir, "config.yaml")
    for path in (model_path, config_path):
        if not os.path.isfile(path):
            raise DetectError(f"{model_dir} is not a model folder: {os.path.basename(path)} is missing")
    with open(config_path, encoding="utf-8") as f:
        raw = yaml.safe_load(f) or {}
    raw.get("dataset", {}).pop("class_names", None)
    config = from_dict(raw)
    from detect.models.loading import load_model_file

    return load_model_file(model_path), config


class Predictor:
    """Runs a detector on uint8 RGB images of any size; boxes come back in image pixels."""

    def __init__(self, model, config):
        self.model = model
        self.config = config
        self.class_names = list(model.class_names)
        self.canvas_size = tuple(model.canvas_size)
        self._detect = tf.function(model.predict_step, reduce_retracing=True)

    @classmethod
    def from_dir(cls, model_dir):
        return cls(*load_model_dir(model_dir))

    def prepare(self, image):
        inp = self.config["input"]
        prepared = prepare_image(image, min_size=inp["min_size"], max_size=inp["max_size"], canvas_size=self.canvas_size)
        if not self.model.use_rpn:
            prepared["proposals"] = self._proposals(image, prepared["scale"][0])
        return prepared

    def _proposals(self, image, scale):
        """Selective search on the fly for models without an RPN: (1, P, 4) canvas pixels."""
        from detect.proposals.selective_search import selective_search

        p = self.config["proposals"]
        boxes = selective_search(image, mode=p["mode"], max_side=p["max_side"], max_proposals=p["max_proposals"])
        out = np.zeros((1, p["max_proposals"], 4), np.float32)
        sy, sx = float(scale[0]), float(scale[1])
        out[0, : len(boxes)] = boxes * np.array([sx, sy, sx, sy], np.float32)
        return out

    def predict_batch(self, images, score_threshold=0.0):
        """Detections for a list of uint8 (H, W, 3) RGB images (or paths).

        Returns one dict per image: boxes (D, 4) xyxy in that image's pixels, scores (D,),
        labels (D,) in 1..K, class_names (D,) list.
        """
        arrays = [read_image(im) if isinstance(im, (str, bytes, os.PathLike)) else im for im in images]
        prepared = [self.prepare(a) for a in arrays]
        inputs = {k: np.concatenate([p[k] for p in prepared]) for k in prepared[0]}
        raw = {k: v.numpy() for k, v in self._detect(inputs).items()}
        out = []
        for i in range(len(arrays)):
            n = int(raw["num_detections"][i])
            keep = raw["scores"][i, :n] >= score_threshold
            labels = raw["labels"][i, :n][keep]
            out.append(
                {
                    "boxes": raw["boxes"][i, :n][keep],
                    "scores": raw["scores"][i, :n][keep],
                    "labels": labels,
                    "class_names": [self.class_names[int(l) - 1] for l in labels],
                }
            )
        return out

    def predict(self, image, score_threshold=0.0):
        """Detections for one uint8 (H, W, 3) RGB image or image path (see predict_batch)."""
        return self.predict_batch([image], score_threshold)[0]
