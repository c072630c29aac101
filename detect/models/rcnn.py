"""R-CNN: every proposal is cropped from the image with context, warped to a fixed size and
run through the CNN on its own; linear SVMs score the features and ridge regressors move
the boxes (Girshick et al. 2014).

Shape shorthand: N images, H x W the padded canvas, P proposals per image, M valid
proposals of a batch (flattened), c the crop side, D the feature width the SVMs read,
F the width of the "pool5-level" features the box regressors read, K classes.
Naming: `gt_*` ground truth, `svm_*` SVM margins, `box_*` regressor outputs. Boxes are xyxy
in canvas pixels until `detect` rescales them to the original image.

Features per backbone (crop c = 224 for VGG16 / ResNet):
  tiny      trunk(crop) is the last pooled conv map (c/16 x c/16 x C); D = F = its flatten.
  vgg16     pool5 = 2x2 max-pool of conv5_3 (7 x 7 x 512); D = fc7 (fc6/fc7 on pool5),
            F = flatten(pool5), as in the paper's appendix.
  resnet*   conv4 map (14 x 14 x 1024) -> res5 -> global average pool; D = F = 2048.

Inputs are those of Fast R-CNN: images (N, H, W, 3) float32 RGB [0, 255], image_shape
(N, 2) int32, scale (N, 2) (sy, sx) original -> canvas, proposals (N, P, 4) canvas pixels
(zero rows = padding) and, for fine-tuning, gt_boxes (N, G, 4) / gt_labels (N, G).
"""

import keras
from keras import ops

from detect import compat
from detect.errors import DetectError
from detect.models.backbones import build_backbone
from detect.models.detector import PredictsDetections
from detect.models.postprocess import postprocess_detections
from detect.models.roi_heads import sample_rois_batch
from detect.ops import dispatch
from detect.ops.bilinear import bilinear_crops
from detect.ops.box_coder import BoxCoder
from detect.ops.boxes import to_normalized_yxyx, valid_mask
from detect.ops.matching import Matcher

SCORINGS = ("svm", "softmax")


def context_boxes(boxes, crop_size, context):
    """Boxes (..., 4) xyxy grown about their centres by crop / (crop - 2 * context), so that
    after warping to crop x crop pixels the original box fills the centre (crop - 2 * context)
    pixels and `context` pixels of its surroundings border it on every side."""
    factor = float(crop_size) / float(crop_size - 2 * context)
    cx = 0.5 * (boxes[..., 0] + boxes[..., 2])
    cy = 0.5 * (boxes[..., 1] + boxes[..., 3])
    half_w = 0.5 * factor * (boxes[..., 2] - boxes[..., 0])
    half_h = 0.5 * factor * (boxes[..., 3] - boxes[..., 1])
    return ops.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=-1)


def warp_regions(images, boxes, box_indices, crop_size, context):
    """Anisotropic warps of image regions: (M, crop, crop, 3).

    Args:
      images: (N, H, W, 3) float32.
      boxes: (M, 4) xyxy canvas pixels (before context padding).
      box_indices: (M,) int32 image of each box.
    Sample i of a crop sits at the centre of output cell i, x1 + (i + 0.5) * w / crop in
    continuous pixels; pixel k's centre is k + 0.5, hence the -0.5 to pixel indices, which
    crop_and_resize reads as y * (H - 1). Outside the canvas the crop is 0 (black), like
    the canvas padding.
    """
    grown = context_boxes(ops.cast(boxes, "float32"), crop_size, context)
    step_x = (grown[:, 2] - grown[:, 0]) / crop_size
    step_y = (grown[:, 3] - grown[:, 1]) / crop_size
    first_last = ops.stack(
        [
            grown[:, 0] + 0.5 * step_x - 0.5,
            grown[:, 1] + 0.5 * step_y - 0.5,
            grown[:, 2] - 0.5 * step_x - 0.5,
            grown[:, 3] - 0.5 * step_y - 0.5,
        ],
        axis=-1,
    )
    height = ops.cast(ops.shape(images)[1] - 1, "float32")
    width = ops.cast(ops.shape(images)[2] - 1, "float32")
    return dispatch.crop_and_resize(images, to_normalized_yxyx(first_last, height, width),
                                    ops.cast(box_indices, "int32"), crop_size, portable=bilinear_crops)


@keras.saving.register_keras_serializable(package="detect")
class RCNN(PredictsDetections, keras.Model):
    """R-CNN detector; `detect` is one graph from proposals to final detections.

    `scoring` "svm" ranks proposals by sigmoid(SVM margin) (the trained detector);
    "softmax" uses the fine-tuning classifier (K + 1 softmax), e.g. while fine-tuning.
    The SVMs (`svm`, Dense(K)) and box regressors (`box_regressor`, Dense(4K), deltas for
    BoxCoder weights (1, 1, 1, 1)) are set after training with `set_svms` /
    `set_box_regressors`; their initial zero weights leave proposals where they are.
    """

    def __init__(
        self,
        *,
        class_names,
        canvas_size=(600, 1000),
        backbone="tiny",
        backbone_weights="none",
        backbone_width=32,
        crop_size=224,
        context=16,
        chunk_size=128,
        head_dim=4096,
        fg_iou=0.5,
        regions_per_image=64,
        positive_fraction=0.25,
        scoring="svm",
        score_threshold=0.05,
        nms_iou=0.5,
        max_detections=100,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if scoring not in SCORINGS:
            raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.canvas_size = tuple(int(s) for s in canvas_size)
        self.use_rpn = False
        self.head_svd_ranks = None  # no truncated-SVD head: the fc layers run once per region
        self.backbone_name = backbone
        self.backbone_width = int(backbone_width)
        self.crop_size = int(crop_size)
        self.context = int(context)
        self.chunk_size = int(chunk_size)
        self.head_dim = int(head_dim)
        self.fg_iou = float(fg_iou)
        self.regions_per_image = int(regions_per_image)
        self.positive_fraction = float(positive_fraction)
        self.scoring = scoring
        self.score_threshold = float(score_threshold)
        self.nms_iou = float(nms_iou)
        self.max_detections = int(max_detections)
        self._check_crop()
        self._build_layers(backbone_weights)
        self.coder = BoxCoder()
        self.matcher = Matcher(self.fg_iou, self.fg_iou, allow_low_quality_matches=False)
        # Created here, not on the first traced call: TensorFlow's traced functions and
        # distribution strategies need every variable before tracing.
        self.seed_generator = keras.random.SeedGenerator(name="sampler_seed")
        self.trackers = {name: keras.metrics.Mean(name=name) for name in ("cls_loss", "cls_accuracy")}

    def _build_layers(self, backbone_weights):
        """The CNN and the three heads, with every variable created from shapes alone."""
        # tiny: the trunk's pooled map is the feature and build_backbone's fc head is
        # dropped, so it is built at width 1.
        backbone = self.backbone_name
        self.trunk, head, info = build_backbone(
            backbone, backbone_weights, roi_size=max(self.crop_size // 32, 1),
            head_dim=1 if backbone == "tiny" else self.head_dim, width=self.backbone_width,
        )
        self.head = None if backbone == "tiny" else head
        self.pool5 = keras.layers.MaxPool2D(2, name="pool5") if backbone == "vgg16" else None
        self.flatten = keras.layers.Flatten(name="flatten")
        self.feature_dim, self.regression_dim = self._feature_dims(info["channels"])
        k = self.num_classes
        init = keras.initializers.RandomNormal(stddev=0.01)
        self.classifier = keras.layers.Dense(k + 1, kernel_initializer=init, name="classifier")
        self.svm = keras.layers.Dense(k, kernel_initializer="zeros", trainable=False, name="svm")
        self.box_regressor = keras.layers.Dense(4 * k, kernel_initializer="zeros", trainable=False, name="box_regressor")
        self.classifier.build((None, self.feature_dim))
        self.svm.build((None, self.feature_dim))
        self.box_regressor.build((None, self.regression_dim))
        self.built = True

    @property
    def metrics(self):
        # The loss tracker Keras adds when compiled, then ours (a dict is not tracked).
        return super().metrics + list(self.trackers.values())

    # ----------------------------------------------------------------- construction
    def _check_crop(self):
        multiple = 16 if self.backbone_name == "tiny" else 32
        if self.crop_size < multiple or self.crop_size % multiple:
            raise DetectError(f"rcnn.crop_size: {self.crop_size} is not a multiple of {multiple} for {self.backbone_name}")
        if not 0 <= 2 * self.context < self.crop_size:
            raise DetectError(f"rcnn.context: {self.context} px leave no room for the box in a {self.crop_size} px crop")

    def _feature_dims(self, channels):
        cells = self.crop_size // 16
        if self.backbone_name == "tiny":
            flat = cells * cells * channels
            return flat, flat
        if self.backbone_name == "vgg16":
            return self.head_dim, (cells // 2) ** 2 * channels
        return 2048, 2048

    def get_config(self):
        config = {
            "class_names": self.class_names,
            "canvas_size": list(self.canvas_size),
            "backbone": self.backbone_name,
            "backbone_weights": "none",  # the weights travel in the .keras file
            "backbone_width": self.backbone_width,
            "crop_size": self.crop_size,
            "context": self.context,
            "chunk_size": self.chunk_size,
            "head_dim": self.head_dim,
            "fg_iou": self.fg_iou,
            "regions_per_image": self.regions_per_image,
            "positive_fraction": self.positive_fraction,
            "scoring": self.scoring,
            "score_threshold": self.score_threshold,
            "nms_iou": self.nms_iou,
            "max_detections": self.max_detections,
        }
        return {**super().get_config(), **config}

    @classmethod
    def from_config(cls, config):
        return cls(**compat.constructor_kwargs(config))

    # ----------------------------------------------------------------- features
    def crop_features(self, crops, training=False):
        """CNN on warped crops (M, c, c, 3) -> (features (M, D), regression features (M, F)),
        float32 whatever the compute precision."""
        x = self.trunk(crops, training=training)
        if self.backbone_name == "tiny":
            features = regression = self.flatten(x)
        elif self.pool5 is not None:
            pooled = self.pool5(x)
            features, regression = self.head(pooled, training=training), self.flatten(pooled)
        else:
            features = regression = self.head(x, training=training)
        return ops.cast(features, "float32"), ops.cast(regression, "float32")

    def region_features(self, images, boxes, box_indices, training=False):
        """Features of boxes (M, 4) xyxy canvas pixels in images box_indices (M,), one pass."""
        crops = warp_regions(ops.cast(images, "float32"), boxes, box_indices, self.crop_size, self.context)
        return self.crop_features(crops, training=training)

    def chunked_region_features(self, images, boxes, box_indices):
        """region_features in chunks of `chunk_size` crops (bounded memory, inference only).

        boxes (M, 4), box_indices (M,) -> features (M, D), regression features (M, F).
        """
        size = self.chunk_size
        count = boxes.shape[0] if boxes.shape[0] is not None else ops.shape(boxes)[0]
        chunks = (count + size - 1) // size
        pad = chunks * size - count
        boxes = ops.reshape(ops.pad(ops.cast(boxes, "float32"), [[0, pad], [0, 0]]), (-1, size, 4))
        box_indices = ops.reshape(ops.pad(ops.cast(box_indices, "int32"), [[0, pad]]), (-1, size))

        def one(args):
            return self.region_features(images, args[0], args[1], training=False)

        features, regression = dispatch.sequential_map(
            one, (boxes, box_indices), outputs=(((size, self.feature_dim), "float32"),
                                                ((size, self.regression_dim), "float32")))
        features = ops.reshape(features, (-1, self.feature_dim))[:count]
        regression = ops.reshape(regression, (-1, self.regression_dim))[:count]
        return features, regression

    # ----------------------------------------------------------------- forward
    def call(self, inputs, training=False):
        """With gt in `inputs`: fine-tuning outputs rois (N, R, 4), roi_labels (N, R) and
        class_logits (N, R, K + 1) of sampled regions. Without: rois = proposals (N, P, 4),
        roi_valid (N, P), class_logits (N, P, K + 1), svm_scores (N, P, K) margins and
        box_deltas (N, P, K, 4); padding rows are 0."""
        images = ops.cast(inputs["images"], "float32")
        proposals = ops.cast(inputs["proposals"], "float32")
        valid = valid_mask(proposals)
        if "gt_boxes" in inputs:
            return self._sampled(images, proposals, valid, inputs, training)
        flat_boxes, image_index, where = dispatch.compact_rows(proposals, valid)
        features, regression = self.chunked_region_features(images, flat_boxes, image_index)
        outputs = self.box_head(features, regression, where, valid)
        return {"rois": proposals, "roi_valid": valid, **outputs}

    def box_head(self, features, regression, where, valid):
        """Classifier, SVM and regressor outputs of the regions `dispatch.compact_rows`
        gave, put back on the (N, P) grid of `valid` (zeros in the other rows):
        class_logits (N, P, K + 1), svm_scores (N, P, K), box_deltas (N, P, K, 4)."""
        k = self.num_classes

        def expand(layer, values):
            return dispatch.expand_rows(ops.cast(layer(values), "float32"), where, valid)

        deltas = expand(self.box_regressor, regression)
        n, p = ops.shape(deltas)[0], ops.shape(deltas)[1]
        return {
            "class_logits": expand(self.classifier, features),
            "svm_scores": expand(self.svm, features),
            "box_deltas": ops.reshape(deltas, (n, p, k, 4)),
        }

    def _sampled(self, images, proposals, valid, inputs, training):
        rois, labels, _ = sample_rois_batch(
            proposals, valid, inputs["gt_boxes"], inputs["gt_labels"], matcher=self.matcher, coder=self.coder,
            num_samples=self.regions_per_image, positive_fraction=self.positive_fraction, seed=self.seed_generator,
        )
        n = ops.shape(rois)[0]
        r = self.regions_per_image
        indices = ops.repeat(ops.arange(n, dtype="int32"), r)
        features, _ = self.region_features(images, ops.reshape(rois, (-1, 4)), indices, training=training)
        logits = ops.reshape(ops.cast(self.classifier(features), "float32"), (n, r, self.num_classes + 1))
        return {"rois": rois, "roi_labels": labels, "class_logits": logits}

    # ----------------------------------------------------------------- training
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Softmax cross entropy of the (K + 1)-way fine-tuning classifier on sampled regions."""
        labels = y_pred["roi_labels"]
        logits = y_pred["class_logits"]
        sampled = ops.cast(labels >= 0, "float32")
        normalizer = ops.maximum(ops.sum(sampled), 1.0)
        ce = ops.sparse_categorical_crossentropy(ops.maximum(labels, 0), logits, from_logits=True)
        loss = ops.sum(ce * sampled) / normalizer
        correct = ops.cast(ops.equal(ops.cast(ops.argmax(logits, axis=-1), "int32"), labels), "float32")
        self.trackers["cls_loss"].update_state(loss)
        self.trackers["cls_accuracy"].update_state(ops.sum(correct * sampled) / normalizer)
        # Keras sums replica gradients: each replica contributes its share of the mean.
        return loss / compat.num_replicas()

    # ----------------------------------------------------------------- learned heads
    def set_svms(self, kernel, bias):
        """SVM weights: kernel (D, K), bias (K,) on raw features (any scaling folded in)."""
        self.svm.set_weights([kernel.astype("float32"), bias.astype("float32")])

    def set_box_regressors(self, kernel, bias):
        """Regressor weights: kernel (F, 4K), bias (4K,) giving [dx, dy, dw, dh] per class."""
        self.box_regressor.set_weights([kernel.astype("float32"), bias.astype("float32")])

    # ----------------------------------------------------------------- inference
    def region_scores(self, outputs):
        """(N, P, K) scores in [0, 1]: sigmoid of the SVM margin (a monotone map, so the
        ranking is the SVMs'), or the softmax class probabilities; padding rows 0."""
        if self.scoring == "svm":
            scores = ops.sigmoid(outputs["svm_scores"])
        else:
            scores = ops.softmax(outputs["class_logits"], axis=-1)[..., 1:]
        return ops.where(outputs["roi_valid"][..., None], scores, 0.0)

    def postprocess(self, outputs, image_shape, scale=None):
        """Scores (`region_scores`), regressed boxes, per-class NMS and rescaling of `call`
        outputs (see detect.models.postprocess.postprocess_detections). test
        score_threshold applies to the [0, 1] scores (for SVMs, sigmoid(margin) > 0.05
        keeps margins above -2.94)."""
        return postprocess_detections(
            self.region_scores(outputs), outputs["box_deltas"], outputs["rois"], outputs["roi_valid"], image_shape,
            scale, coder=self.coder, score_threshold=self.score_threshold, nms_iou=self.nms_iou,
            max_detections=self.max_detections,
        )
