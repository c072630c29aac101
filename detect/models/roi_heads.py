"""RoI heads: RoI sampling with targets, RoI pooling, box head, predictor, loss, postprocess.

Shape shorthand: N images, Hf x Wf feature cells, C channels, P proposals per image, R RoIs
per image that reach the head, S pooled size, D box-head feature width, K classes (the
class logits have K + 1 columns, column 0 background; the deltas have K). Boxes are
(.., 4) xyxy canvas pixels until `postprocess` rescales them to the original image.
Labels: 0 background, 1..K classes, -1 padding / not sampled.
"""

import keras
from keras import ops

from detect.models.losses import detection_losses
from detect.models.postprocess import postprocess_detections
from detect.models.rpn import masked_iou, with_dummy_gt
from detect.ops.box_coder import BoxCoder
from detect.ops.matching import IGNORE, Matcher, sample_balanced
from detect.ops.multilevel import MultiLevelRoIAlign
from detect.ops.roi_pool import RoIAlign, RoIPool


@keras.saving.register_keras_serializable(package="detect")
class BoxPredictor(keras.layers.Layer):
    """call(features (X, D)) -> (class_logits (X, K + 1), deltas (X, K, 4))."""

    def __init__(self, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.cls = keras.layers.Dense(
            self.num_classes + 1, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01), name="cls"
        )
        self.box = keras.layers.Dense(
            4 * self.num_classes, kernel_initializer=keras.initializers.RandomNormal(stddev=0.001), name="box"
        )

    def build(self, input_shape):
        self.cls.build(input_shape)
        self.box.build(input_shape)

    def call(self, features):
        logits = self.cls(features)
        deltas = keras.ops.reshape(self.box(features), (-1, self.num_classes, 4))
        return logits, deltas

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


def sample_rois(proposals, proposal_valid, gt_boxes, gt_labels, *, matcher, coder, num_samples,
                positive_fraction, bg_iou_low=0.0, seed=None, keys=None):
    """Sample R = `num_samples` RoIs for one image and give them targets.

    The ground-truth boxes join the proposals as candidates (as in all reference
    implementations), so every object has at least one foreground RoI. Foreground: IoU >=
    the matcher's threshold; background: IoU in [bg_iou_low, fg) (Fast R-CNN's 0.1;
    torchvision and detectron2 use 0). `sample_balanced` keeps at most
    floor(R * positive_fraction) foreground, background fills the rest; when both run
    short, other candidates fill the slots with label -1 (no loss), so R is static.

    Args:
      proposals: (P, 4) xyxy; proposal_valid: (P,) bool (False for padding rows).
      gt_boxes: (G, 4) xyxy; gt_labels: (G,) int32 1..K, -1 padding.
      seed: the sampler's randomness when `keys` is None; keys: (P + max(G, 1),) uniform
        [0, 1) keys (the candidates: proposals, then ground truth), drawn by the caller.
    Returns:
      rois (R, 4), labels (R,) int32 in -1..K, target_deltas (R, 4) (0 unless label > 0).
    """
    gt_boxes, gt_labels = with_dummy_gt(gt_boxes, gt_labels)
    candidates = ops.concatenate([proposals, gt_boxes], axis=0)
    valid = ops.concatenate([proposal_valid, gt_labels > 0], axis=0)
    iou = masked_iou(gt_boxes, gt_labels, candidates)
    matched, match_labels = matcher(iou)
    # Background closer than bg_iou_low to every object is ignored; on an image without
    # objects every candidate stays background (a negative image still trains the classifier).
    best = ops.max(ops.maximum(iou, 0.0), axis=0)
    too_far = ops.logical_and(best < bg_iou_low, ops.any(gt_labels > 0))
    far_background = ops.logical_and(match_labels == 0, too_far)
    match_labels = ops.where(ops.logical_and(valid, ops.logical_not(far_background)), match_labels, IGNORE)
    if keys is None:
        keys = keras.random.uniform(ops.shape(valid), seed=seed)
    sampled = sample_balanced(match_labels, num_samples, positive_fraction, keys=keys)

    # Sampled candidates first, then the other valid ones, then padding; random within each.
    key = ops.where(sampled >= 0, 2.0 + keys, ops.where(valid, 1.0 + keys, keys))
    num_candidates = _length(key)
    # top_k needs k <= length: pad keys with -1 so short candidate lists still give R rows.
    short = num_samples - num_candidates
    key = ops.pad(key, [[0, max(short, 0) if isinstance(short, int) else ops.maximum(short, 0)]],
                  constant_values=-1.0)
    index = ops.top_k(key, k=num_samples)[1]
    in_range = index < num_candidates
    index = ops.minimum(index, num_candidates - 1)
    picked = ops.where(in_range, ops.take(sampled, index, axis=0), IGNORE)
    matched_picked = ops.take(matched, index, axis=0)
    labels = ops.where(picked == 1, ops.take(gt_labels, matched_picked, axis=0), ops.where(picked == 0, 0, -1))
    rois = ops.take(candidates, index, axis=0)
    target_deltas = coder.encode(ops.take(gt_boxes, matched_picked, axis=0), rois)
    target_deltas = ops.where((labels > 0)[:, None], target_deltas, 0.0)
    return rois, ops.cast(labels, "int32"), target_deltas


def _length(x, axis=0):
    """The static length of an axis; a tensor only where TensorFlow runs with unknown
    sizes (proposals read from files of any count)."""
    return x.shape[axis] if x.shape[axis] is not None else ops.shape(x)[axis]


def sample_rois_batch(proposals, proposal_valid, gt_boxes, gt_labels, *, num_samples, seed=None, **kwargs):
    """`sample_rois` over a batch: (N, P, 4), (N, P), (N, G, 4), (N, G) ->
    rois (N, R, 4) (no gradient), labels (N, R), target_deltas (N, R, 4).

    The random keys of the whole batch are drawn from `seed` (None, an int or a
    keras.random.SeedGenerator) before the per-image map: a seed generator cannot
    advance inside a traced loop on JAX."""
    r = int(num_samples)
    num_candidates = _length(proposals, axis=1) + max(gt_boxes.shape[1], 1)
    keys = keras.random.uniform((ops.shape(proposals)[0], num_candidates), seed=seed)

    def one(args):
        return sample_rois(*args[:4], num_samples=r, keys=args[4], **kwargs)

    rois, labels, targets = ops.map(one, (
        ops.cast(proposals, "float32"), proposal_valid, ops.cast(gt_boxes, "float32"), ops.cast(gt_labels, "int32"),
        keys,
    ))
    return ops.stop_gradient(rois), labels, targets


@keras.saving.register_keras_serializable(package="detect")
class RoIHeads(keras.layers.Layer):
    """The second stage as one part (Girshick 2015): RoI sampler, RoI pooling (pool |
    align), the box head passed in (fc6/fc7 or res5, from detect.models.backbones), the
    predictor, its loss and postprocessing.

    call(features (N, Hf, Wf, C), rois (N, R, 4), training) ->
      (class_logits (N, R, K + 1), box_deltas (N, R, K, 4)), float32.

    Feature pyramid: with `pool_strides` (the pooled levels' strides, e.g. P2..P5 = 4..32)
    `features` is the list of levels and each RoI is RoIAligned from its level
    (detect.ops.multilevel, canonical_size / level 4); `spatial_scale` is then unused.
    """

    def __init__(self, *, num_classes, box_head, pool="align", pool_size=7, spatial_scale=1.0 / 16,
                 sampling_ratio=2, batch_size=128, positive_fraction=0.25, fg_iou=0.5, bg_iou_low=0.0,
                 box_weights=(10.0, 10.0, 5.0, 5.0), loss_weight=1.0, score_threshold=0.05, nms_iou=0.5,
                 max_detections=100, pool_strides=None, canonical_size=224.0, aligned=True, min_box_size=0.0,
                 seed=None, **kwargs):
        super().__init__(**kwargs)
        if pool not in ("align", "pool"):
            raise ValueError(f"roi pool must be 'align' or 'pool', got {pool!r}")
        self.pool_strides = None if pool_strides is None else tuple(int(s) for s in pool_strides)
        self.canonical_size = float(canonical_size)
        self.num_classes = int(num_classes)
        self.box_head = box_head
        self.pool_type, self.pool_size = pool, int(pool_size)
        self.spatial_scale, self.sampling_ratio = float(spatial_scale), int(sampling_ratio)
        self.batch_size, self.positive_fraction = int(batch_size), float(positive_fraction)
        self.fg_iou, self.bg_iou_low = float(fg_iou), float(bg_iou_low)
        self.box_weights = tuple(float(w) for w in box_weights)
        self.loss_weight = float(loss_weight)
        self.score_threshold, self.nms_iou = float(score_threshold), float(nms_iou)
        self.max_detections = int(max_detections)
        self.aligned = bool(aligned)
        self.min_box_size = float(min_box_size)
        if self.pool_strides is not None:
            # RoIPool has no multi-level form here: pyramids pool with RoIAlign.
            self.pooler = MultiLevelRoIAlign(self.pool_size, self.pool_strides, self.sampling_ratio,
                                             self.canonical_size, aligned=self.aligned, name="multilevel_roi_align")
        elif pool == "align":
            self.pooler = RoIAlign(self.pool_size, spatial_scale=self.spatial_scale,
                                   sampling_ratio=self.sampling_ratio, aligned=self.aligned, name="roi_align")
        else:
            self.pooler = RoIPool(self.pool_size, spatial_scale=self.spatial_scale, name="roi_pool")
        self.predictor = BoxPredictor(self.num_classes, name="box_predictor")
        self.coder = BoxCoder(weights=self.box_weights)
        self.matcher = Matcher(self.fg_iou, self.fg_iou, allow_low_quality_matches=False)
        self.seed_generator = keras.random.SeedGenerator(seed, name="sampler_seed")

    def build(self, features_shape, rois_shape=None):
        self.predictor.build((None, int(self.box_head.output_shape[-1])))

    def sample(self, proposals, proposal_valid, gt_boxes, gt_labels):
        """RoIs with targets for a batch (see `sample_rois_batch`)."""
        return sample_rois_batch(
            proposals, proposal_valid, gt_boxes, gt_labels, matcher=self.matcher, coder=self.coder,
            num_samples=self.batch_size, positive_fraction=self.positive_fraction, bg_iou_low=self.bg_iou_low,
            seed=self.seed_generator,
        )

    def call(self, features, rois, training=False):
        pooled = self.pooler(features, rois)
        n = ops.shape(rois)[0]
        r = rois.shape[1] if rois.shape[1] is not None else ops.shape(rois)[1]
        flat = ops.reshape(pooled, (-1, pooled.shape[2], pooled.shape[3], pooled.shape[-1]))
        vectors = self.box_head(flat, training=training)
        logits, deltas = self.predictor(vectors)
        # Under mixed precision the layers compute in float16; box arithmetic stays float32.
        logits = ops.reshape(ops.cast(logits, "float32"), (n, r, self.num_classes + 1))
        deltas = ops.reshape(ops.cast(deltas, "float32"), (n, r, self.num_classes, 4))
        return logits, deltas

    def loss(self, class_logits, box_deltas, labels, target_deltas):
        """(classification loss, box loss), each normalized by the sampled RoIs."""
        return detection_losses(class_logits, box_deltas, labels, target_deltas)

    def postprocess(self, class_logits, box_deltas, rois, roi_valid, image_shape, scale):
        """Final detections: softmax, per-class decode, clip, threshold, per-class NMS, top-k,
        rescale by `scale` (N, 2) (sy, sx) to original pixels (see postprocess_detections)."""
        probs = ops.softmax(class_logits, axis=-1)[..., 1:]
        return postprocess_detections(
            probs, box_deltas, rois, roi_valid, image_shape, scale, coder=self.coder,
            score_threshold=self.score_threshold, nms_iou=self.nms_iou, max_detections=self.max_detections,
            min_box_size=self.min_box_size,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes, "box_head": keras.saving.serialize_keras_object(self.box_head),
            "pool": self.pool_type, "pool_size": self.pool_size, "spatial_scale": self.spatial_scale,
            "sampling_ratio": self.sampling_ratio, "batch_size": self.batch_size,
            "positive_fraction": self.positive_fraction, "fg_iou": self.fg_iou, "bg_iou_low": self.bg_iou_low,
            "box_weights": list(self.box_weights), "loss_weight": self.loss_weight,
            "score_threshold": self.score_threshold, "nms_iou": self.nms_iou, "max_detections": self.max_detections,
            "pool_strides": None if self.pool_strides is None else list(self.pool_strides),
            "canonical_size": self.canonical_size, "aligned": self.aligned, "min_box_size": self.min_box_size,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["box_head"] = keras.saving.deserialize_keras_object(config["box_head"])
        return cls(**config)
