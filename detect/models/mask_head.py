"""The mask head of Mask R-CNN (He et al. 2017): a small FCN on RoIAligned features.

Shape shorthand: N images, R RoIs per image (M: the foreground RoIs the head trains on),
S the pooled size (14), 2S the mask side (28), C head channels, K classes, G padded
ground-truth objects, Hc x Wc canvas. Boxes are xyxy canvas pixels. Naming: `gt_*` ground
truth, `pred_*` / logits network outputs.

RoIAlign S x S (from the RoI's FPN level, or the single feature map) -> `num_convs` conv
3x3 + ReLU (C channels) -> deconv 2x2 stride 2 + ReLU -> conv 1x1 to K per-class logits at
2S x 2S. The loss is per-pixel binary cross entropy on the logits of each RoI's
ground-truth class only (no competition among classes), averaged over the pixels of the
foreground RoIs whose object has a mask; targets are the matched gt mask RoIAligned into
the RoI (detect.ops.masks.mask_targets).
"""

import keras
from keras import ops

from detect.ops.masks import PASTE_RULES, mask_targets, matched_gt
from detect.ops.multilevel import MultiLevelRoIAlign
from detect.ops.roi_pool import RoIAlign


@keras.saving.register_keras_serializable(package="detect")
class MaskHead(keras.layers.Layer):
    """call(features (N, Hf, Wf, C') or the FPN list, rois (N, R, 4)) -> (N, R, 2S, 2S, K)
    float32 mask logits.

    Args:
      num_classes: K. pool_size: S (14 in the paper). channels: C (256). num_convs: 4.
      spatial_scale, sampling_ratio: the single-map RoIAlign (1 / stride).
      pool_strides, canonical_size: FPN levels to pool from (as RoIHeads; each RoI from
        its level); None pools the single map.
      num_rois: M, foreground RoIs per image the head trains on (None: all R sampled RoIs;
        the sampler keeps at most roi.batch_size * positive_fraction foreground, the
        registry's default).
      paste: how masks are pasted into the image (detect.ops.masks.paste_masks): detectron2
        or torchvision (the converted torchvision models).
      loss_weight: factor of the mask loss in the total. threshold: mask probability that
        counts as foreground when masks are pasted (inference).
      aligned: RoIAlign's half-cell shift (True, detectron2); False pools as torchvision's
        aligned=False (the registry passes roi.aligned, as the box head's).
    """

    def __init__(self, *, num_classes, pool_size=14, channels=256, num_convs=4, spatial_scale=1.0 / 16,
                 sampling_ratio=2, pool_strides=None, canonical_size=224.0, num_rois=None, loss_weight=1.0,
                 threshold=0.5, aligned=True, paste="detectron2", **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.pool_size = int(num_classes), int(pool_size)
        self.channels, self.num_convs = int(channels), int(num_convs)
        self.spatial_scale, self.sampling_ratio = float(spatial_scale), int(sampling_ratio)
        self.pool_strides = None if pool_strides is None else tuple(int(s) for s in pool_strides)
        self.canonical_size = float(canonical_size)
        self.num_rois = None if num_rois is None else int(num_rois)
        self.loss_weight, self.threshold = float(loss_weight), float(threshold)
        if paste not in PASTE_RULES:
            raise ValueError(f"mask paste must be one of {PASTE_RULES}, got {paste!r}")
        self.paste = paste
        self.aligned = bool(aligned)
        if self.pool_strides is not None:
            self.pooler = MultiLevelRoIAlign(self.pool_size, self.pool_strides, self.sampling_ratio,
                                             self.canonical_size, aligned=self.aligned,
                                             name="mask_multilevel_roi_align")
        else:
            self.pooler = RoIAlign(self.pool_size, spatial_scale=self.spatial_scale,
                                   sampling_ratio=self.sampling_ratio, aligned=self.aligned,
                                   name="mask_roi_align")
        # He-normal (fan_out) as detectron2's c2_msra_fill; the predictor's std 0.001.
        init = keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")
        self.convs = [keras.layers.Conv2D(self.channels, 3, padding="same", activation="relu", kernel_initializer=init,
                                          name=f"mask_fcn{i + 1}") for i in range(self.num_convs)]
        self.deconv = keras.layers.Conv2DTranspose(self.channels, 2, strides=2, activation="relu",
                                                   kernel_initializer=init, name="mask_deconv")
        self.predictor = keras.layers.Conv2D(self.num_classes, 1, name="mask_logits",
                                             kernel_initializer=keras.initializers.RandomNormal(stddev=0.001))

    @property
    def mask_size(self):
        return 2 * self.pool_size

    def build(self, features_shape, rois_shape=None):
        channels = int(features_shape[-1])
        shape = (None, self.pool_size, self.pool_size, channels)
        for conv in self.convs:
            conv.build(shape)
            shape = (None, self.pool_size, self.pool_size, self.channels)
        self.deconv.build(shape)
        self.predictor.build((None, self.mask_size, self.mask_size, self.channels))
        self.built = True

    def call(self, features, rois, training=False):
        pooled = self.pooler(features, rois)
        n = ops.shape(rois)[0]
        r = rois.shape[1] if rois.shape[1] is not None else ops.shape(rois)[1]
        x = ops.reshape(pooled, (-1, self.pool_size, self.pool_size, pooled.shape[-1]))
        for conv in self.convs:
            x = conv(x)
        logits = self.predictor(self.deconv(x))
        size = self.mask_size
        return ops.reshape(ops.cast(logits, "float32"), (n, r, size, size, self.num_classes))

    # ------------------------------------------------------------- training
    def select(self, rois, labels):
        """The first M foreground RoIs of each image: (rois (N, M, 4), labels (N, M)); rows
        past an image's foreground count get label -1 (no loss)."""
        r = labels.shape[1]
        k = r if self.num_rois is None else min(self.num_rois, r)
        # Foreground first, in sampled order (a static-shape stable partition).
        key = ops.cast(labels > 0, "float32") * 2.0 * r - ops.cast(ops.arange(r)[None, :], "float32")
        index = ops.top_k(key, k=k)[1]
        picked = ops.take_along_axis(labels, index, axis=1)
        chosen = ops.take_along_axis(rois, ops.repeat(index[..., None], 4, axis=2), axis=1)
        return chosen, ops.where(picked > 0, picked, -1)

    def targets(self, rois, labels, gt_boxes, gt_labels, gt_masks, gt_mask_valid):
        """(targets (N, M, 2S, 2S) 0/1, weights (N, M)): the matched gt masks in the RoIs, and
        1 for foreground RoIs whose object has a mask."""
        index = matched_gt(rois, gt_boxes, gt_labels)
        targets = mask_targets(gt_masks, index, rois, self.mask_size, self.sampling_ratio)
        has_mask = ops.take_along_axis(ops.cast(gt_mask_valid, "float32"), index, axis=1)
        return ops.stop_gradient(targets), ops.cast(labels > 0, "float32") * has_mask

    def loss(self, logits, labels, targets, weights):
        """Mean binary cross entropy over the pixels of the weighted RoIs, on the logits of
        each RoI's gt class (He et al. 2017, "L_mask"); 0 without any such RoI."""
        chosen = select_class(logits, labels)
        bce = ops.binary_crossentropy(targets, chosen, from_logits=True)  # (N, M, 2S, 2S), per pixel
        per_roi = ops.mean(bce, axis=(2, 3))
        return ops.sum(per_roi * weights) / ops.maximum(ops.sum(weights), 1.0)

    def get_config(self):
        return {
            **super().get_config(), "num_classes": self.num_classes, "pool_size": self.pool_size,
            "channels": self.channels, "num_convs": self.num_convs, "spatial_scale": self.spatial_scale,
            "sampling_ratio": self.sampling_ratio,
            "pool_strides": None if self.pool_strides is None else list(self.pool_strides),
            "canonical_size": self.canonical_size, "num_rois": self.num_rois, "loss_weight": self.loss_weight,
            "threshold": self.threshold, "aligned": self.aligned, "paste": self.paste,
        }


def select_class(logits, labels):
    """(N, R, 2S, 2S) logits of each RoI's class from (N, R, 2S, 2S, K); labels (N, R) in
    1..K (0 and -1 pick class 1, for rows that are masked anyway)."""
    index = ops.maximum(ops.cast(labels, "int32") - 1, 0)[:, :, None, None, None]
    shape = ops.shape(logits)
    index = ops.broadcast_to(index, (shape[0], shape[1], shape[2], shape[3], 1))
    return ops.take_along_axis(logits, index, axis=4)[..., 0]
