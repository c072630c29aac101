"""The two-stage detector: backbone -> region proposals -> RoI heads.

Faster R-CNN passes a RegionProposalNetwork; Fast R-CNN passes `rpn=None` and reads
proposals from its inputs. Neither carries the other's settings: each part owns its own.

Shape shorthand: N images per batch, H x W the padded canvas, Hf x Wf feature cells,
M anchors, G padded ground-truth boxes, P proposals per image, R RoIs per image that reach
the head, K classes. Naming: `gt_*` ground truth, `pred_*` network outputs. Boxes are xyxy
in canvas pixels until postprocessing rescales them to the original image.

Inputs (one dict):
  images (N, H, W, 3) float32 RGB in [0, 255], content at the top-left of the canvas;
  image_shape (N, 2) int32 content (height, width); scale (N, 2) (sy, sx) original ->
  canvas (prediction only); gt_boxes (N, G, 4) and gt_labels (N, G) (training and
  validation; label -1 = padding); proposals (N, P, 4) for models without an RPN (and for
  Faster R-CNN in step 2 of the alternating schedule).
"""

import keras
from keras import ops

from detect import compat
from detect.models.backbones import freeze_fixed_layers
from detect.models.fpn import FeaturePyramid  # noqa: F401 - registered for keras.saving
from detect.models.roi_heads import RoIHeads  # noqa: F401 - registered for keras.saving
from detect.models.rpn import RegionProposalNetwork  # noqa: F401 - registered for keras.saving
from detect.ops.boxes import valid_mask

STAGES = ("joint", "rpn", "detector")
MODEL_INPUTS = ("images", "image_shape", "proposals")


class PredictsDetections:
    """`predict_step` for detectors with a `postprocess(outputs, image_shape, scale)` stage:
    the one inference path (predict, evaluate, export, the Python API)."""

    def predict_step(self, data):
        """Final detections: boxes (N, D, 4) xyxy original pixels, scores (N, D), labels
        (N, D), num_detections (N,), plus `image_id` when the inputs carry it."""
        x = data[0] if isinstance(data, tuple) else data
        outputs = self({k: x[k] for k in MODEL_INPUTS if k in x}, training=False)
        detections = self.postprocess(outputs, x["image_shape"], x.get("scale"))
        if "image_id" in x:
            detections["image_id"] = x["image_id"]
        return detections


@keras.saving.register_keras_serializable(package="detect")
class TwoStageDetector(compat.BuiltInInit, compat.PerWorkerLogs, PredictsDetections, keras.Model):
    """backbone + rpn (or None) + roi_heads.

    Args:
      backbone: a Keras model, images (N, H, W, 3) RGB [0, 255] -> features (N, Hf, Wf, C).
      roi_heads: detect.models.roi_heads.RoIHeads.
      rpn: detect.models.rpn.RegionProposalNetwork, or None to read `proposals` inputs.
      neck: None, or a layer between backbone and heads taking the backbone's outputs, e.g.
        detect.models.fpn.FeaturePyramid ([C2..C5] -> [P2..P6]); the features the RPN and
        RoI heads see are then the neck's list of levels.
      class_names: the K class names, in label order 1..K.
      canvas_size: (H, W) padded canvas the pipeline produces for this model.
      stage: which losses train: "joint" (approximate joint training), "rpn" (RPN losses
        only) or "detector" (head losses only); the steps of the alternating schedule.
    Public stages, used by `call`, `predict_step` and the benchmark timers: `features`,
    `propose`, `box_head`, `postprocess`.
    """

    def __init__(self, *, backbone, roi_heads, rpn=None, neck=None, class_names, canvas_size=(600, 1000),
                 stage="joint", **kwargs):
        super().__init__(**kwargs)
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        self.backbone = backbone
        self.neck = neck
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.canvas_size = tuple(int(s) for s in canvas_size)
        self.stage = stage
        names = (("rpn_cls_loss", "rpn_box_loss") if rpn is not None else ()) + ("roi_cls_loss", "roi_box_loss")
        # A list attribute: Keras tracks the metrics in it (model.metrics, reset each epoch).
        self.loss_trackers = [keras.metrics.Mean(name=name) for name in names]
        # Variables are created from shapes alone: no forward pass at canvas size.
        if neck is None:
            features_shape = (None, None, None, int(backbone.output_shape[-1]))
        else:
            if not neck.built:
                neck.build([tuple(shape) for shape in backbone.output_shape])
            features_shape = (None, None, None, int(neck.channels))
        for part in (rpn, roi_heads):
            if part is not None and not part.built:  # parts loaded from a file come built
                part.build(features_shape)
        self.built = True

    @property
    def use_rpn(self):
        return self.rpn is not None

    @property
    def head_svd_ranks(self):
        """(r6, r7) when the fc6/fc7 box head is a truncated SVD (detect export --svd), else None."""
        from detect.models.svd import head_ranks

        return head_ranks(self.roi_heads.box_head)

    # ----------------------------------------------------------------- stages
    def features(self, images, training=False):
        """(N, Hf, Wf, C) backbone features of raw-pixel images; with a neck, its outputs
        (FPN: the list [P2..P6] of (N, Hl, Wl, C) maps, finest first)."""
        features = self.backbone(ops.cast(images, "float32"), training=training)
        if self.neck is None:
            return features
        return self.neck(list(features), training=training)

    def propose(self, inputs, features, training=False):
        """Proposals (N, P, 4) and their validity (N, P), plus the RPN outputs (a dict, or
        None when the proposals come from the inputs)."""
        if self.rpn is None or "proposals" in inputs:
            proposals = ops.cast(inputs["proposals"], "float32")
            return proposals, valid_mask(proposals), None
        rpn_outputs = self.rpn(features, inputs["image_shape"], training=training)
        return rpn_outputs["proposals"], rpn_outputs["proposal_valid"], rpn_outputs

    def box_head(self, features, rois, training=False):
        """(class_logits (N, R, K + 1), box_deltas (N, R, K, 4)) of RoIs (N, R, 4)."""
        return self.roi_heads(features, rois, training=training)

    def postprocess(self, outputs, image_shape, scale=None):
        """Final detections of `call` outputs (see RoIHeads.postprocess)."""
        return self.roi_heads.postprocess(
            outputs["class_logits"], outputs["box_deltas"], outputs["rois"], outputs["roi_valid"], image_shape, scale
        )

    # ----------------------------------------------------------------- forward
    def call(self, inputs, training=False):
        """Forward pass. With ground truth in `inputs`, RoIs are sampled for the losses.

        Returns a dict: rois (N, R, 4), roi_valid (N, R), class_logits (N, R, K + 1),
        box_deltas (N, R, K, 4); with an RPN `rpn` (its outputs); when sampling,
        roi_labels (N, R) and roi_targets (N, R, 4).
        """
        features = self.features(inputs["images"], training=training)
        sampling = "gt_boxes" in inputs
        proposals, valid, rpn_outputs = self.propose(inputs, features, training=sampling)
        outputs = {} if rpn_outputs is None else {"rpn": rpn_outputs}
        if sampling:
            rois, labels, targets = self.roi_heads.sample(proposals, valid, inputs["gt_boxes"], inputs["gt_labels"])
            outputs.update(roi_labels=labels, roi_targets=targets)
            outputs.update(self.sampled_outputs(features, rois, labels, training=training))
            roi_valid = labels >= 0
        else:
            rois, roi_valid = proposals, valid
        class_logits, box_deltas = self.box_head(features, rois, training=training)
        outputs.update(rois=rois, roi_valid=roi_valid, class_logits=class_logits, box_deltas=box_deltas)
        return outputs

    def sampled_outputs(self, features, rois, labels, training=False):
        """Extra outputs of a training forward pass from the sampled RoIs (N, R, 4) and their
        labels (N, R): none here; heads beyond the box head (Mask R-CNN's) add theirs."""
        return {}

    # ----------------------------------------------------------------- training
    def set_trainable(self, backbone=True, rpn=True, heads=True):
        """Which parts train; the backbone's build-time freezing (VGG conv1-2, ResNet
        conv1-2 and BatchNorm) is re-applied after every toggle."""
        self.backbone.trainable = backbone
        freeze_fixed_layers(self.backbone)
        if self.neck is not None:
            self.neck.trainable = backbone
        if self.rpn is not None:
            self.rpn.trainable = rpn
        self.roi_heads.trainable = heads
        freeze_fixed_layers(self.roi_heads.box_head)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Sum of the losses the current `stage` trains; components go to the trackers."""
        zero = ops.convert_to_tensor(0.0)
        values = {"rpn_cls_loss": zero, "rpn_box_loss": zero, "roi_cls_loss": zero, "roi_box_loss": zero}
        total = zero
        if "rpn" in y_pred and self.stage in ("joint", "rpn"):
            cls, box = self.rpn.loss(y_pred["rpn"], x["gt_boxes"], x["gt_labels"], x["image_shape"])
            values.update(rpn_cls_loss=cls, rpn_box_loss=box)
            total += self.rpn.loss_weight * (cls + box)
        if self.stage in ("joint", "detector"):
            cls, box = self.roi_heads.loss(
                y_pred["class_logits"], y_pred["box_deltas"], y_pred["roi_labels"], y_pred["roi_targets"]
            )
            values.update(roi_cls_loss=cls, roi_box_loss=box)
            total += self.roi_heads.loss_weight * (cls + box)
        for tracker in self.loss_trackers:
            tracker.update_state(values[tracker.name])
        # Keras sums replica gradients: each replica contributes its share of the mean.
        return total / compat.num_replicas()

    # ----------------------------------------------------------------- saving
    def get_config(self):
        serialize = keras.saving.serialize_keras_object
        return {
            **super().get_config(),
            "backbone": serialize(self.backbone),
            "neck": None if self.neck is None else serialize(self.neck),
            "rpn": None if self.rpn is None else serialize(self.rpn),
            "roi_heads": serialize(self.roi_heads),
            "class_names": self.class_names,
            "canvas_size": list(self.canvas_size),
            "stage": self.stage,
        }

    @classmethod
    def from_config(cls, config):
        config = compat.constructor_kwargs(config)
        deserialize = keras.saving.deserialize_keras_object
        for part in ("backbone", "neck", "rpn", "roi_heads"):
            if config.get(part) is not None:
                config[part] = deserialize(config[part])
        return cls(**config)
