"""Load a trained model folder and run it on images: `detect.load(model_dir).predict(image)`."""

import os

import numpy as np
import tensorflow as tf

from detect.data.images import read_image
from detect.data.pipeline import prepare_image
from detect.data.splits import pad_value
from detect.data.transforms import pad_to_canvas, resize
from detect.errors import DetectError
from detect.models.loading import load_model_dir


class Predictor:
    """Runs a detector on uint8 RGB images of any size; boxes come back in image pixels.

    The model and the resize run as traced graphs: the model once for every batch size
    (batch dimension None), the resize once per image dtype and rank, so neither retraces
    when the last batch is smaller or image sizes change.
    """

    def __init__(self, model, config):
        from detect.inference.export import input_signature

        self.model = model
        self.config = config
        self.class_names = list(model.class_names)
        self.canvas_size = tuple(model.canvas_size)
        # Padding as the training and evaluation pipelines pad: the backbone's mean colour.
        self.pad_value = pad_value(config["backbone"]["name"])
        spec = {s.name: s for s in input_signature(model)}
        self._detect = tf.function(model.predict_step, input_signature=[spec])
        self._resize = tf.function(self._resize_graph, input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])

    @classmethod
    def from_dir(cls, model_dir):
        return cls(*load_model_dir(model_dir))

    def _resize_graph(self, image):
        """prepare_image's resize and padding as one graph (eager op by op is ~5x slower)."""
        inp = self.config["input"]
        resized, _, scale = resize(image, tf.zeros([0, 4]), inp["min_size"], inp["max_size"], self.canvas_size)
        return pad_to_canvas(resized, self.canvas_size, self.pad_value), tf.shape(resized)[:2], scale

    def prepare(self, image):
        """Model inputs (batch of 1, NumPy) for one (H, W, 3) RGB image: images (1, Hc, Wc, 3)
        float32, image_shape (1, 2) int32, scale (1, 2) float32 (+ proposals (1, P, 4))."""
        image = np.asarray(image)
        if image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
            images, content, scale = self._resize(image)
            prepared = {"images": images.numpy()[None], "image_shape": content.numpy()[None],
                        "scale": scale.numpy()[None]}
        else:
            inp = self.config["input"]
            prepared = prepare_image(image, min_size=inp["min_size"], max_size=inp["max_size"],
                                     canvas_size=self.canvas_size, pad_value=self.pad_value)
        if not self.model.use_rpn:
            prepared["proposals"] = self._proposals(image, prepared["scale"][0])
        return prepared

    def prepare_batch(self, images):
        """Model inputs for a list of images or image paths, concatenated along the batch."""
        arrays = [read_image(im) if isinstance(im, (str, bytes, os.PathLike)) else im for im in images]
        prepared = [self.prepare(a) for a in arrays]
        return {k: np.concatenate([p[k] for p in prepared]) for k in prepared[0]}

    def _proposals(self, image, scale):
        """Selective search on the fly for models without an RPN: (1, P, 4) canvas pixels."""
        from detect.proposals.selective_search import selective_search

        p = self.config["proposals"]
        boxes = selective_search(image, mode=p["mode"], max_side=p["max_side"], max_proposals=p["max_proposals"])
        out = np.zeros((1, p["max_proposals"], 4), np.float32)
        sy, sx = float(scale[0]), float(scale[1])
        out[0, : len(boxes)] = boxes * np.array([sx, sy, sx, sy], np.float32)
        return out

    def predict_batch(self, images, score_threshold=0.0, prepared=None):
        """Detections for a list of uint8 (H, W, 3) RGB images (or paths).

        prepared: the images' model inputs from `prepare_batch` when the caller made them
        already (`detect predict` does it in a reader thread), else None.

        Returns one dict per image: boxes (D, 4) xyxy in that image's pixels, scores (D,),
        labels (D,) in 1..K, class_names (D,) list.
        """
        if prepared is None:
            prepared = self.prepare_batch(images)
        raw = {k: v.numpy() for k, v in self._detect(prepared).items()}
        out = []
        for i in range(len(images)):
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
