"""Mask R-CNN (He et al. 2017): the two-stage detector with a mask head beside the box head.

Shape shorthand as detect/models/detector.py, plus M foreground RoIs per image that train
the mask head, D detections per image, 2S the mask side (28), G padded gt objects.

Inputs: those of TwoStageDetector; for training also gt_masks (N, G, Hc, Wc) uint8 0/1 and
gt_mask_valid (N, G) bool (detect.data.pipeline with masks=True).
Training: the box path is TwoStageDetector's (same sampler, same losses); the first M
foreground RoIs of each image also go through the mask head and add `mask_loss`.
Inference (`predict_step`): the final detections as TwoStageDetector's, plus `masks`
(N, D, 2S, 2S) float32, the probability of the detected class in each detection's box
(zeros in padding rows); detect.ops.masks.paste_masks puts them into the image.
"""

import keras
from keras import ops

from detect import compat
from detect.models.detector import MODEL_INPUTS, TwoStageDetector
from detect.models.mask_head import MaskHead, select_class


@keras.saving.register_keras_serializable(package="detect")
class MaskRCNN(TwoStageDetector):
    """TwoStageDetector + mask_head (detect.models.mask_head.MaskHead).

    Public stages: those of TwoStageDetector, plus `mask_logits(features, rois)` and
    `predict_masks(features, detections, scale)`.
    """

    def __init__(self, *, mask_head, **kwargs):
        super().__init__(**kwargs)
        self.mask_head = mask_head
        # Its own attribute (Keras tracks it as a model metric): TwoStageDetector's loss
        # trackers are the four box-path losses it fills itself.
        self.mask_loss_tracker = keras.metrics.Mean(name="mask_loss")
        if not mask_head.built:
            channels = int(self.backbone.output_shape[-1]) if self.neck is None else int(self.neck.channels)
            mask_head.build((None, None, None, channels))

    # ----------------------------------------------------------------- stages
    def mask_logits(self, features, rois, training=False):
        """(N, R, 2S, 2S, K) mask logits of RoIs (N, R, 4) xyxy canvas pixels."""
        return self.mask_head(features, rois, training=training)

    def predict_masks(self, features, detections, scale=None):
        """(N, D, 2S, 2S) mask probabilities of the detected class in each detection's box;
        detections as `postprocess` returns them (boxes in original pixels, `scale` (N, 2)
        (sy, sx) maps them back onto the canvas)."""
        boxes = detections["boxes"]
        if scale is not None:
            scale = ops.cast(scale, boxes.dtype)
            boxes = boxes * ops.stack([scale[:, 1], scale[:, 0], scale[:, 1], scale[:, 0]], axis=-1)[:, None, :]
        logits = self.mask_logits(features, boxes)
        probs = ops.sigmoid(select_class(logits, detections["labels"]))
        return ops.where((detections["labels"] > 0)[:, :, None, None], probs, 0.0)

    # ----------------------------------------------------------------- forward
    def sampled_outputs(self, features, rois, labels, training=False):
        """mask_rois (N, M, 4), mask_labels (N, M) (-1 for rows without a foreground RoI) and
        mask_logits (N, M, 2S, 2S, K): the mask head's share of a training forward pass."""
        mask_rois, mask_labels = self.mask_head.select(rois, labels)
        return {"mask_rois": mask_rois, "mask_labels": mask_labels,
                "mask_logits": self.mask_logits(features, mask_rois, training=training)}

    def predict_step(self, data):
        """TwoStageDetector's detections plus `masks` (N, D, 2S, 2S) (module docstring)."""
        x = data[0] if isinstance(data, tuple) else data
        inputs = {k: x[k] for k in MODEL_INPUTS if k in x}
        features = self.features(inputs["images"], training=False)
        proposals, valid, _ = self.propose(inputs, features, training=False)
        class_logits, box_deltas = self.box_head(features, proposals, training=False)
        outputs = {"rois": proposals, "roi_valid": valid, "class_logits": class_logits, "box_deltas": box_deltas}
        detections = self.postprocess(outputs, x["image_shape"], x.get("scale"))
        detections["masks"] = self.predict_masks(features, detections, x.get("scale"))
        if "image_id" in x:
            detections["image_id"] = x["image_id"]
        return detections

    # ----------------------------------------------------------------- training
    def set_trainable(self, backbone=True, rpn=True, heads=True):
        super().set_trainable(backbone=backbone, rpn=rpn, heads=heads)
        self.mask_head.trainable = heads

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """TwoStageDetector's losses plus mask_weight * mask_loss (stages joint / detector)."""
        total = super().compute_loss(x, y, y_pred, sample_weight, training)
        mask_loss = ops.convert_to_tensor(0.0)
        if "mask_logits" in y_pred and self.stage in ("joint", "detector"):
            targets, weights = self.mask_head.targets(
                y_pred["mask_rois"], y_pred["mask_labels"], x["gt_boxes"], x["gt_labels"], x["gt_masks"],
                x["gt_mask_valid"],
            )
            mask_loss = self.mask_head.loss(y_pred["mask_logits"], y_pred["mask_labels"], targets, weights)
        self.mask_loss_tracker.update_state(mask_loss)
        return total + self.mask_head.loss_weight * mask_loss / compat.num_replicas()

    # ----------------------------------------------------------------- saving
    def get_config(self):
        return {**super().get_config(), "mask_head": keras.saving.serialize_keras_object(self.mask_head)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["mask_head"] = keras.saving.deserialize_keras_object(config["mask_head"])
        return super().from_config(config)


__all__ = ["MaskHead", "MaskRCNN"]
