"""Load a trained model folder and run it on images: `detect.load(model_dir).predict(image)`.

Images are prepared as the training and evaluation pipelines prepare them (pipeline.py):
resized by the rule alone (shorter side min_size, longer side at most max_size) and padded
onto the canvas of the resized image's orientation, the config's landscape canvas for
width >= height and its transpose for portrait images (transforms.canvases). So a portrait
photo is seen at the scale `detect evaluate` sees it, and detections match evaluate's.
With `input.canvas: per_image` (the converted torchvision detectors) each image is padded
only to its own size rounded up to 32, as torchvision batches one image, and the model is
traced once with free canvas sizes.
"""

import os

import keras
import numpy as np

from detect.data.canvas import canvases, per_image_canvas
from detect.data.images import read_image
from detect.data.splits import has_tensorflow, pad_value
from detect.models.loading import load_model_dir
from detect.inference.predict_function import predict_function


def _signature(model, canvas):
    """The model's input signature on a canvas (dict of tf.TensorSpec), for TensorFlow's
    one trace per canvas; None on the other backends (they compile per input shape)."""
    if keras.backend.backend() != "tensorflow":
        return None
    from detect.inference.export import input_signature

    return {s.name: s for s in input_signature(model, canvas)}


def canvas_of(prepared):
    """(Hc, Wc) canvas of prepared model inputs (a dict with images (N, Hc, Wc, 3))."""
    return tuple(int(s) for s in prepared["images"].shape[1:3])


def stack_inputs(prepared):
    """One batch of model inputs from a list of prepared inputs of one canvas each.

    Raises ValueError when they lie on different canvases (a batch holds one orientation).
    """
    found = {canvas_of(p) for p in prepared}
    if len(found) > 1:
        raise ValueError(f"a batch holds images of one canvas, got canvases {sorted(found)}: "
                         "group the images by orientation (Predictor.predict_batch does)")
    return {k: np.concatenate([p[k] for p in prepared]) for k in prepared[0]}


class Predictor:
    """Runs a detector on uint8 RGB images of any size; boxes come back in image pixels.

    The model and the resize run as traced graphs: the model once for every canvas (the
    landscape one and, for non-square canvases, the portrait one) with the batch dimension
    free, the resize once per image dtype, so nothing retraces when the last batch is
    smaller or image sizes change.
    """

    def __init__(self, model, config, min_score=None, precision=None):
        """min_score: the lowest score a caller will ask for; a model whose own threshold
        (test.score_threshold) is higher keeps detections down to it instead, so
        `--score-threshold 0` sees up to test.max_detections detections per image.
        precision: float32 | bf16 (detect/inference/precision.py); None: the config's
        test.precision. The model is switched in place before it is traced."""
        from detect.inference.precision import apply_precision

        self.precision = precision or config.get("test", {}).get("precision", "float32")
        self.model = apply_precision(model, self.precision)
        self.config = config
        self.class_names = list(model.class_names)
        if min_score is not None:
            lower_score_threshold(model, min_score)
        inp = config["input"]
        self.per_image = inp.get("canvas") == "per_image"
        self.resize_rule = inp.get("resize", "detect")
        # (landscape, portrait) canvases (height, width) of the training and evaluation pipelines.
        self.canvases = canvases(inp["min_size"], inp["max_size"], None if self.per_image else inp.get("canvas"))
        self.canvas_size = self.canvases[0]
        # Padding as the training and evaluation pipelines pad: the backbone's mean colour.
        self.pad_value = pad_value(config["backbone"]["name"])
        self._detect = {}
        if self.per_image:
            self._any_canvas = predict_function(model, _signature(model, (None, None)))
        else:
            for canvas in dict.fromkeys(self.canvases):
                self._detect[canvas] = predict_function(model, _signature(model, canvas))
        self._resizers = {}

    @classmethod
    def from_dir(cls, model_dir, min_score=None, precision=None):
        return cls(*load_model_dir(model_dir), min_score=min_score, precision=precision)

    def _resize_graph(self, image):
        """The pipeline's resize and padding as one graph (eager op by op is ~5x slower):
        (canvas image, content (height, width), scale (sy, sx))."""
        import tensorflow as tf

        from detect.data.transforms import pad_to_canvas, pad_to_orientation_canvas, resize

        inp = self.config["input"]
        resized, _, scale = resize(image, tf.zeros([0, 4]), inp["min_size"], inp["max_size"], rule=self.resize_rule)
        content = tf.shape(resized)[:2]
        if self.per_image:
            padded = pad_to_canvas(resized, per_image_canvas(content[0], content[1]), self.pad_value)
        else:
            padded = pad_to_orientation_canvas(resized, *self.canvases, self.pad_value)
        return padded, content, scale

    @property
    def _numpy_resize(self):
        """The tf.data pipeline resizes with tf.image, the PyDataset path (no TensorFlow)
        with NumPy (numpy_transforms, equal within 0.05 of 255): as evaluation does."""
        return not has_tensorflow()

    def _resize_numpy(self, image):
        """_resize_graph in NumPy (numpy_transforms), where TensorFlow is not installed."""
        from detect.data import numpy_transforms as nt

        inp = self.config["input"]
        resized, _, scale = nt.resize(image, np.zeros((0, 4), np.float32), inp["min_size"], inp["max_size"],
                                      rule=self.resize_rule)
        content = np.array(resized.shape[:2], np.int32)
        if self.per_image:
            canvas = per_image_canvas(int(content[0]), int(content[1]))
        else:
            canvas = self.canvases[1] if content[0] > content[1] else self.canvases[0]
        return nt.pad_to_canvas(resized, canvas, self.pad_value), content, scale

    def _resizer(self, dtype):
        """The traced resize for (H, W, 3) images of one dtype."""
        if self._numpy_resize:
            return lambda image: tuple(keras.ops.convert_to_numpy(a) for a in self._resize_numpy(image))
        import tensorflow as tf

        if dtype not in self._resizers:
            spec = tf.TensorSpec([None, None, 3], tf.as_dtype(dtype))
            self._resizers[dtype] = tf.function(self._resize_graph, input_signature=[spec])
        return self._resizers[dtype]

    def prepare(self, image):
        """Model inputs (batch of 1, NumPy) for one (H, W, 3) RGB image: images (1, Hc, Wc, 3)
        float32 on the canvas of its orientation (`canvas_of` tells which), image_shape
        (1, 2) int32, scale (1, 2) float32 (+ proposals (1, P, 4) canvas pixels)."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB image, got an array of shape {image.shape}")
        images, content, scale = (np.asarray(a) for a in self._resizer(image.dtype)(image))
        prepared = {"images": images[None], "image_shape": content[None], "scale": scale[None]}
        if not self.model.use_rpn:
            prepared["proposals"] = self._proposals(image, prepared["scale"][0])
        return prepared

    def prepare_batch(self, images):
        """Model inputs for a list of images or image paths of one canvas orientation,
        concatenated along the batch (ValueError when orientations are mixed)."""
        return stack_inputs([self.prepare(_array(im)) for im in images])

    def _proposals(self, image, scale):
        """Selective search on the fly for models without an RPN: (1, P, 4) canvas pixels.

        scale: (sy, sx) of this image's resize; the same on either canvas, since the
        content sits at the canvas' top-left."""
        from detect.proposals.selective_search import selective_search

        p = self.config["proposals"]
        boxes = selective_search(image, mode=p["mode"], max_side=p["max_side"], max_proposals=p["max_proposals"])
        out = np.zeros((1, p["max_proposals"], 4), np.float32)
        sy, sx = float(scale[0]), float(scale[1])
        out[0, : len(boxes)] = boxes * np.array([sx, sy, sx, sy], np.float32)
        return out

    def predict_batch(self, images, score_threshold=0.0, prepared=None):
        """Detections for a list of uint8 (H, W, 3) RGB images (or paths), in list order.

        Images of both orientations may be mixed: each canvas runs as its own batch.
        prepared: the images' model inputs from `prepare_batch` (one canvas) when the caller
        made them already (`detect predict` does it in a reader thread), else None.

        Returns one dict per image: boxes (D, 4) xyxy in that image's pixels, scores (D,),
        labels (D,) in 1..K, class_names (D,) list; Mask R-CNN models also masks (D, H, W)
        bool, pasted into the image at full resolution (detect.inference.masks).
        """
        if prepared is not None:
            return self._run(prepared, score_threshold)
        inputs = [self.prepare(_array(im)) for im in images]
        groups = {}  # canvas -> positions of its images in the list
        for i, p in enumerate(inputs):
            groups.setdefault(canvas_of(p), []).append(i)
        out = [None] * len(inputs)
        for positions in groups.values():
            results = self._run(stack_inputs([inputs[i] for i in positions]), score_threshold)
            for i, result in zip(positions, results):
                out[i] = result
        return out

    def _run(self, prepared, score_threshold):
        """The traced model of the inputs' canvas on one batch; one dict per image."""
        detect = self._any_canvas if self.per_image else self._detect.get(canvas_of(prepared))
        if detect is None:
            raise ValueError(f"images on canvas {canvas_of(prepared)}: this model's canvases are "
                             f"{' and '.join(map(str, self._detect))}")
        raw = detect(prepared)
        out = []
        for i in range(len(raw["num_detections"])):
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
            if "masks" in raw:
                from detect.inference.masks import image_masks, mask_paste, mask_threshold, original_size

                height, width = original_size(prepared["image_shape"][i], prepared["scale"][i])
                out[-1]["masks"] = image_masks(raw["masks"][i, :n][keep], out[-1]["boxes"], height, width,
                                               mask_threshold(self.model), mask_paste(self.model))
        return out

    def predict(self, image, score_threshold=0.0):
        """Detections for one uint8 (H, W, 3) RGB image or image path (see predict_batch)."""
        return self.predict_batch([image], score_threshold)[0]


def lower_score_threshold(model, score):
    """Lower the detection score threshold of a model's postprocessing to `score` (never
    raise it): RoI heads' test.score_threshold, or an R-CNN's own."""
    part = getattr(model, "roi_heads", model)
    if hasattr(part, "score_threshold") and float(score) < part.score_threshold:
        part.score_threshold = float(score)


def _array(image):
    """An image array, read from disk when given a path."""
    return read_image(image) if isinstance(image, (str, bytes, os.PathLike)) else image
