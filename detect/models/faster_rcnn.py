"""Faster R-CNN (and the shared two-stage machinery Fast R-CNN reuses).

Shape shorthand: N images per batch, H x W the padded canvas, Hf x Wf = H/16 x W/16
feature cells, A anchors per cell, M = Hf * Wf * A anchors, G padded ground-truth boxes,
P proposals per image, R RoIs per image that reach the head, S RoI output size,
K classes. Naming: `gt_*` ground truth, `pred_*` network outputs, `rpn_*` / `roi_*` the
two stages. All boxes are xyxy in canvas pixels until postprocessing rescales them to the
original image.

Inputs (one dict):
  images (N, H, W, 3) float32 RGB in [0, 255], content at the top-left of the canvas;
  image_shape (N, 2) int32 content (height, width); scale (N, 2) (sy, sx) original ->
  canvas (prediction only); gt_boxes (N, G, 4) and gt_labels (N, G) (training and
  validation; label -1 = padding); proposals (N, P, 4) for models without an RPN.
"""

import keras
import tensorflow as tf

from detect.ops.anchors import grid_anchors
from detect.ops.box_coder import BoxCoder
from detect.losses import detection_losses, rpn_losses
from detect.ops.matching import Matcher
from detect.models.backbones import build_backbone
from detect.models.heads import BoxPredictor
from detect.models.postprocess import postprocess_detections
from detect.ops.roi_pool import RoIAlign, RoIPool
from detect.models.rpn import RPNHead, generate_proposals
from detect.targets import roi_targets_batch, rpn_targets_batch

STAGES = ("joint", "rpn", "detector")


def constructor_kwargs(config):
    """A saved model config minus the base-Layer keys our keyword-only constructors rebuild."""
    config = dict(config)
    for key in ("trainable", "dtype"):
        config.pop(key, None)
    return config


@keras.saving.register_keras_serializable(package="detect")
class FasterRCNN(keras.Model):
    """Two-stage detector: backbone -> RPN -> RoI pooling -> head -> postprocess.

    `stage` selects which losses train: "joint" (approximate joint training, the default),
    "rpn" (RPN losses only) or "detector" (head losses only), the building blocks of the
    paper's 4-step alternating schedule. With `use_rpn=False` the model is Fast R-CNN and
    reads proposals from its inputs.
    """

    def __init__(
        self,
        *,
        class_names,
        canvas_size=(600, 1000),
        backbone="tiny",
        backbone_weights="none",
        backbone_width=32,
        use_rpn=True,
        anchor_sizes=(128, 256, 512),
        anchor_ratios=(0.5, 1.0, 2.0),
        rpn_channels=512,
        rpn_fg_iou=0.7,
        rpn_bg_iou=0.3,
        rpn_batch_size=256,
        rpn_positive_fraction=0.5,
        pre_nms_top_n_train=12000,
        post_nms_top_n_train=2000,
        pre_nms_top_n_test=6000,
        post_nms_top_n_test=300,
        rpn_nms_iou=0.7,
        rpn_min_size=0.0,
        ignore_border=True,
        rpn_loss_weight=1.0,
        roi_pool="align",
        roi_size=7,
        sampling_ratio=2,
        roi_batch_size=128,
        roi_positive_fraction=0.25,
        roi_fg_iou=0.5,
        head_dim=4096,
        head_svd_ranks=None,
        box_weights=(10.0, 10.0, 5.0, 5.0),
        roi_loss_weight=1.0,
        score_threshold=0.05,
        nms_iou=0.5,
        max_detections=100,
        stage="joint",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.canvas_size = tuple(int(s) for s in canvas_size)
        self.backbone_name = backbone
        self.backbone_weights = backbone_weights
        self.backbone_width = int(backbone_width)
        self.use_rpn = bool(use_rpn)
        self.anchor_sizes = tuple(float(s) for s in anchor_sizes)
        self.anchor_ratios = tuple(float(r) for r in anchor_ratios)
        self.rpn_channels = int(rpn_channels)
        self.rpn_fg_iou, self.rpn_bg_iou = float(rpn_fg_iou), float(rpn_bg_iou)
        self.rpn_batch_size = int(rpn_batch_size)
        self.rpn_positive_fraction = float(rpn_positive_fraction)
        self.pre_nms_top_n = {True: int(pre_nms_top_n_train), False: int(pre_nms_top_n_test)}
        self.post_nms_top_n = {True: int(post_nms_top_n_train), False: int(post_nms_top_n_test)}
        self.rpn_nms_iou = float(rpn_nms_iou)
        self.rpn_min_size = float(rpn_min_size)
        self.ignore_border = bool(ignore_border)
        self.rpn_loss_weight = float(rpn_loss_weight)
        self.roi_pool_type = roi_pool
        self.roi_size = int(roi_size)
        self.sampling_ratio = int(sampling_ratio)
        self.roi_batch_size = int(roi_batch_size)
        self.roi_positive_fraction = float(roi_positive_fraction)
        self.roi_fg_iou = float(roi_fg_iou)
        self.head_dim = int(head_dim)
        self.head_svd_ranks = None if head_svd_ranks is None else tuple(int(r) for r in head_svd_ranks)
        self.box_weights = tuple(float(w) for w in box_weights)
        self.roi_loss_weight = float(roi_loss_weight)
        self.score_threshold = float(score_threshold)
        self.nms_iou = float(nms_iou)
        self.max_detections = int(max_detections)
        self.stage = stage

        self.trunk, self.roi_head, info = build_backbone(
            backbone,
            backbone_weights,
            roi_size=self.roi_size,
            head_dim=self.head_dim,
            width=self.backbone_width,
            head_svd_ranks=self.head_svd_ranks,
        )
        pool_size = info["roi_pool_size"]
        scale = 1.0 / info["stride"]
        if roi_pool == "align":
            self.roi_pool = RoIAlign(pool_size, spatial_scale=scale, sampling_ratio=self.sampling_ratio, name="roi_align")
        else:
            self.roi_pool = RoIPool(pool_size, spatial_scale=scale, name="roi_pool")
        self.predictor = BoxPredictor(self.num_classes, name="box_predictor")
        self.rpn_coder = BoxCoder()
        self.roi_coder = BoxCoder(weights=self.box_weights)
        self.rpn_matcher = Matcher(self.rpn_fg_iou, self.rpn_bg_iou, allow_low_quality_matches=True)
        self.roi_matcher = Matcher(self.roi_fg_iou, self.roi_fg_iou, allow_low_quality_matches=False)

        feature_shape = self.trunk.compute_output_shape((1,) + self.canvas_size + (3,))
        self.feature_size = (int(feature_shape[1]), int(feature_shape[2]))
        num_anchors = len(self.anchor_sizes) * len(self.anchor_ratios)
        self.anchors = grid_anchors(
            self.feature_size[0], self.feature_size[1], info["stride"], self.anchor_sizes, self.anchor_ratios
        )
        self.rpn_head = RPNHead(num_anchors, self.rpn_channels, name="rpn_head") if self.use_rpn else None

        names = ("rpn_cls_loss", "rpn_box_loss") if self.use_rpn else ()
        self.trackers = {name: keras.metrics.Mean(name=name) for name in names + ("roi_cls_loss", "roi_box_loss")}
        for name, tracker in self.trackers.items():
            setattr(self, f"_{name}_tracker", tracker)
        self._build_variables()

    # ----------------------------------------------------------------- construction
    def _build_variables(self):
        """Create every variable with one forward pass on a blank canvas."""
        n = 1
        inputs = {
            "images": tf.zeros((n,) + self.canvas_size + (3,)),
            "image_shape": tf.constant([list(self.canvas_size)], tf.int32),
        }
        if not self.use_rpn:
            inputs["proposals"] = tf.constant([[[0.0, 0.0, 16.0, 16.0]]])
        self(inputs, training=False)

    def get_config(self):
        config = {
            "class_names": self.class_names,
            "canvas_size": list(self.canvas_size),
            "backbone": self.backbone_name,
            "backbone_weights": "none",  # the weights travel in the .keras file
            "backbone_width": self.backbone_width,
            "use_rpn": self.use_rpn,
            "anchor_sizes": list(self.anchor_sizes),
            "anchor_ratios": list(self.anchor_ratios),
            "rpn_channels": self.rpn_channels,
            "rpn_fg_iou": self.rpn_fg_iou,
            "rpn_bg_iou": self.rpn_bg_iou,
            "rpn_batch_size": self.rpn_batch_size,
            "rpn_positive_fraction": self.rpn_positive_fraction,
            "pre_nms_top_n_train": self.pre_nms_top_n[True],
            "post_nms_top_n_train": self.post_nms_top_n[True],
            "pre_nms_top_n_test": self.pre_nms_top_n[False],
            "post_nms_top_n_test": self.post_nms_top_n[False],
            "rpn_nms_iou": self.rpn_nms_iou,
            "rpn_min_size": self.rpn_min_size,
            "ignore_border": self.ignore_border,
            "rpn_loss_weight": self.rpn_loss_weight,
            "roi_pool": self.roi_pool_type,
            "roi_size": self.roi_size,
            "sampling_ratio": self.sampling_ratio,
            "roi_batch_size": self.roi_batch_size,
            "roi_positive_fraction": self.roi_positive_fraction,
            "roi_fg_iou": self.roi_fg_iou,
            "head_dim": self.head_dim,
            "head_svd_ranks": None if self.head_svd_ranks is None else list(self.head_svd_ranks),
            "box_weights": list(self.box_weights),
            "roi_loss_weight": self.roi_loss_weight,
            "score_threshold": self.score_threshold,
            "nms_iou": self.nms_iou,
            "max_detections": self.max_detections,
            "stage": self.stage,
        }
        return {**super().get_config(), **config}

    @classmethod
    def from_config(cls, config):
        return cls(**constructor_kwargs(config))

    # ----------------------------------------------------------------- forward
    def _rpn(self, features):
        objectness, deltas = self.rpn_head(features)
        return tf.cast(objectness, tf.float32), tf.cast(deltas, tf.float32)

    def _rpn_proposals(self, objectness, deltas, image_shape, training_counts):
        """The proposal layer with the training (True) or test (False) top-n counts."""
        return generate_proposals(
            objectness,
            deltas,
            self.anchors,
            image_shape,
            coder=self.rpn_coder,
            pre_nms_top_n=self.pre_nms_top_n[training_counts],
            post_nms_top_n=self.post_nms_top_n[training_counts],
            nms_iou=self.rpn_nms_iou,
            min_size=self.rpn_min_size,
        )

    def propose(self, inputs, training_counts=False):
        """RPN proposals only: (N, P, 4) xyxy canvas pixels and (N, P) validity, with the
        training (pre/post-NMS top-n of training) or test counts."""
        features = self.trunk(tf.cast(inputs["images"], tf.float32), training=False)
        objectness, deltas = self._rpn(features)
        return self._rpn_proposals(objectness, deltas, inputs["image_shape"], training_counts)

    def _proposals(self, inputs, features, sampling):
        # External proposals win: Fast R-CNN always, Faster R-CNN in step 2 of the
        # alternating schedule (proposals of the step-1 RPN).
        if not self.use_rpn or "proposals" in inputs:
            proposals = tf.cast(inputs["proposals"], tf.float32)
            valid = (proposals[..., 2] > proposals[..., 0]) & (proposals[..., 3] > proposals[..., 1])
            return None, None, proposals, valid
        objectness, deltas = self._rpn(features)
        proposals, valid = self._rpn_proposals(objectness, deltas, inputs["image_shape"], sampling)
        return objectness, deltas, proposals, valid

    def call(self, inputs, training=False):
        """Forward pass. With ground truth in `inputs`, RoIs are sampled for the losses.

        Returns a dict: rpn_objectness (N, M), rpn_deltas (N, M, 4), rois (N, R, 4),
        roi_valid (N, R), class_logits (N, R, K + 1), box_deltas (N, R, K, 4) and, when
        sampling, roi_labels (N, R) and roi_targets (N, R, 4).
        """
        images = tf.cast(inputs["images"], tf.float32)
        features = self.trunk(images, training=training)
        sampling = "gt_boxes" in inputs
        objectness, rpn_deltas, proposals, valid = self._proposals(inputs, features, sampling)
        outputs = {}
        if objectness is not None:
            outputs.update(rpn_objectness=objectness, rpn_deltas=rpn_deltas)
        if sampling:
            rois, roi_labels, roi_targets = roi_targets_batch(
                proposals,
                valid,
                tf.cast(inputs["gt_boxes"], tf.float32),
                tf.cast(inputs["gt_labels"], tf.int32),
                matcher=self.roi_matcher,
                coder=self.roi_coder,
                num_samples=self.roi_batch_size,
                positive_fraction=self.roi_positive_fraction,
            )
            rois = tf.stop_gradient(rois)
            outputs.update(roi_labels=roi_labels, roi_targets=roi_targets)
            roi_valid = roi_labels >= 0
        else:
            rois, roi_valid = proposals, valid
        class_logits, box_deltas = self._head(features, rois, training)
        outputs.update(rois=rois, roi_valid=roi_valid, class_logits=class_logits, box_deltas=box_deltas)
        return outputs

    def _head(self, features, rois, training):
        pooled = self.roi_pool(features, rois)
        n = tf.shape(rois)[0]
        r = rois.shape[1] if rois.shape[1] is not None else tf.shape(rois)[1]
        size = pooled.shape[2]
        flat = tf.reshape(pooled, [-1, size, size, pooled.shape[-1]])
        vectors = self.roi_head(flat, training=training)
        logits, deltas = self.predictor(vectors)
        # Under mixed precision the layers compute in float16; box arithmetic stays float32.
        logits, deltas = tf.cast(logits, tf.float32), tf.cast(deltas, tf.float32)
        logits = tf.reshape(logits, [n, r, self.num_classes + 1])
        deltas = tf.reshape(deltas, [n, r, self.num_classes, 4])
        return logits, deltas

    # ----------------------------------------------------------------- training
    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras would average a whole input batch across replicas to build compiled
        # metrics symbolically; MultiWorkerMirroredStrategy cannot reduce a dict of inputs.
        # This model is built in __init__ and compiles no metrics: only the optimizer
        # still needs its variables, created here under the strategy's scope.
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)

    def train_step(self, data):
        return self._per_worker_logs(super().train_step(data))

    def test_step(self, data):
        return self._per_worker_logs(super().test_step(data))

    def _per_worker_logs(self, logs):
        # Under MultiWorkerMirroredStrategy Keras averages the logs across workers with
        # strategy.reduce(axis=0), which needs an axis to reduce: give each value one.
        if isinstance(self.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return {name: tf.reshape(value, [1]) for name, value in logs.items()}
        return logs

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Sum of the losses the current `stage` trains; components go to the trackers."""
        zero = tf.constant(0.0)
        rpn_cls = rpn_box = zero
        if "rpn_objectness" in y_pred and self.stage in ("joint", "rpn"):
            labels, targets = rpn_targets_batch(
                self.anchors,
                tf.cast(x["gt_boxes"], tf.float32),
                tf.cast(x["gt_labels"], tf.int32),
                x["image_shape"],
                matcher=self.rpn_matcher,
                coder=self.rpn_coder,
                num_samples=self.rpn_batch_size,
                positive_fraction=self.rpn_positive_fraction,
                ignore_border=self.ignore_border,
            )
            rpn_cls, rpn_box = rpn_losses(y_pred["rpn_objectness"], y_pred["rpn_deltas"], labels, targets)
        roi_cls = roi_box = zero
        if self.stage in ("joint", "detector"):
            roi_cls, roi_box = detection_losses(
                y_pred["class_logits"], y_pred["box_deltas"], y_pred["roi_labels"], y_pred["roi_targets"]
            )
        values = {"rpn_cls_loss": rpn_cls, "rpn_box_loss": rpn_box, "roi_cls_loss": roi_cls, "roi_box_loss": roi_box}
        for name, tracker in self.trackers.items():
            tracker.update_state(values[name])
        total = self.rpn_loss_weight * (rpn_cls + rpn_box) + self.roi_loss_weight * (roi_cls + roi_box)
        # Keras sums replica gradients: each replica contributes its share of the mean.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return total / replicas

    # ----------------------------------------------------------------- inference
    def detect(self, inputs):
        """Final detections for a batch (see postprocess_detections for the outputs)."""
        outputs = self(inputs, training=False)
        n = tf.shape(inputs["images"])[0]
        scale = inputs.get("scale")
        if scale is None:
            scale = tf.ones([n, 2])
        return postprocess_detections(
            outputs["class_logits"],
            outputs["box_deltas"],
            outputs["rois"],
            outputs["roi_valid"],
            inputs["image_shape"],
            scale,
            coder=self.roi_coder,
            score_threshold=self.score_threshold,
            nms_iou=self.nms_iou,
            max_detections=self.max_detections,
        )

    def predict_step(self, data):
        x = data[0] if isinstance(data, tuple) else data
        detections = self.detect(x)
        if "image_id" in x:
            detections["image_id"] = x["image_id"]
        return detections
