"""Region Proposal Network: anchors, conv head, target assignment, loss and proposals.

Shape shorthand: N images, Hf x Wf feature cells, A anchors per cell, M = Hf * Wf * A
anchors, G padded ground-truth boxes (label -1 = padding), P proposals per image. Anchors
are ordered cell-major (row, column), then the A cell anchors (detect.ops.anchors), which
is the order a (N, Hf, Wf, A) conv output has after reshaping to (N, M). Boxes are
(.., 4) xyxy in canvas pixels. Naming: `gt_*` ground truth, `pred_*` network outputs.
"""

import keras
from keras import ops

from detect.models.losses import rpn_losses
from detect.ops.anchors import grid_anchors, torchvision_cell_anchors
from detect.ops.box_coder import BoxCoder
from detect.ops.boxes import clip_boxes, pairwise_iou, small_box_mask
from detect.ops.matching import Matcher, sample_balanced
from detect.ops.nms import nms_padded


@keras.saving.register_keras_serializable(package="detect")
class RPNHead(keras.layers.Layer):
    """`conv_depth` x (3x3 conv + ReLU), then 1x1 convs for A objectness logits and 4A
    deltas per cell (the 4A channels: anchor-major, then dx, dy, dw, dh).

    call(features (N, Hf, Wf, C)) -> (objectness (N, M), deltas (N, M, 4)).
    """

    def __init__(self, num_anchors, channels=512, conv_depth=1, **kwargs):
        super().__init__(**kwargs)
        self.num_anchors = int(num_anchors)
        self.channels = int(channels)
        self.conv_depth = int(conv_depth)
        init = keras.initializers.RandomNormal(stddev=0.01)
        # The first conv keeps the name "conv": models saved before conv_depth load as they were.
        self.convs = [
            keras.layers.Conv2D(self.channels, 3, padding="same", activation="relu", kernel_initializer=init,
                                name="conv" if i == 0 else f"conv{i + 1}")
            for i in range(self.conv_depth)
        ]
        self.objectness = keras.layers.Conv2D(self.num_anchors, 1, kernel_initializer=init, name="objectness")
        self.deltas = keras.layers.Conv2D(4 * self.num_anchors, 1, kernel_initializer=init, name="deltas")

    @property
    def conv(self):
        return self.convs[0]

    def build(self, input_shape):
        shape = tuple(input_shape)
        for conv in self.convs:
            conv.build(shape)
            shape = shape[:-1] + (self.channels,)
        self.objectness.build(shape)
        self.deltas.build(shape)

    def call(self, features):
        x = features
        for conv in self.convs:
            x = conv(x)
        n = ops.shape(features)[0]
        objectness = ops.reshape(self.objectness(x), (n, -1))
        deltas = ops.reshape(self.deltas(x), (n, -1, 4))
        return objectness, deltas

    def get_config(self):
        return {**super().get_config(), "num_anchors": self.num_anchors, "channels": self.channels,
                "conv_depth": self.conv_depth}


def anchors_inside(anchors, image_shape):
    """(M,) bool: anchors fully inside the image content of (height, width) `image_shape`."""
    height = ops.cast(image_shape[0], anchors.dtype)
    width = ops.cast(image_shape[1], anchors.dtype)
    inside_x = ops.logical_and(anchors[:, 0] >= 0, anchors[:, 2] <= width)
    return ops.logical_and(inside_x, ops.logical_and(anchors[:, 1] >= 0, anchors[:, 3] <= height))


def anchor_centres_inside(anchors, image_shape):
    """(N, M) bool: anchors centred on image content (not on the canvas padding).

    anchors: (M, 4) xyxy; image_shape: (N, 2) (height, width).
    """
    cx = 0.5 * (anchors[:, 0] + anchors[:, 2])
    cy = 0.5 * (anchors[:, 1] + anchors[:, 3])
    height = ops.cast(image_shape[:, 0:1], anchors.dtype)
    width = ops.cast(image_shape[:, 1:2], anchors.dtype)
    return ops.logical_and(cx[None, :] < width, cy[None, :] < height)


def rpn_targets(anchors, gt_boxes, gt_labels, image_shape, *, matcher, coder, num_samples,
                positive_fraction, ignore_border, seed=None, keys=None):
    """RPN labels and regression targets for one image.

    With `ignore_border`, anchors crossing the image border take no part (the paper) and
    are removed *before* matching, so the best anchor of an object at the border is its
    best anchor inside the image (py-faster-rcnn's anchor_target_layer does the same).

    Args:
      anchors: (M, 4) xyxy; gt_boxes: (G, 4) xyxy; gt_labels: (G,) int32, -1 = padding.
      image_shape: (2,) int32 content (height, width).
      matcher: Matcher(fg, bg, allow_low_quality_matches=True); coder: BoxCoder.
      seed, keys: the sampler's randomness (see sample_balanced).
    Returns:
      labels (M,) int32 sampled 1 / 0 / -1; target_deltas (M, 4), 0 where labels != 1.
    """
    gt_boxes, gt_labels = with_dummy_gt(gt_boxes, gt_labels)
    iou = masked_iou(gt_boxes, gt_labels, anchors)
    if ignore_border:
        inside = anchors_inside(anchors, image_shape)
        iou = ops.where(inside[None, :], iou, -1.0)
    matched, labels = matcher(iou)
    if ignore_border:
        labels = ops.where(inside, labels, -1)
    labels = sample_balanced(labels, num_samples, positive_fraction, seed=seed, keys=keys)
    target_deltas = coder.encode(ops.take(gt_boxes, matched, axis=0), anchors)
    target_deltas = ops.where((labels == 1)[:, None], target_deltas, 0.0)
    return labels, target_deltas


def with_dummy_gt(gt_boxes, gt_labels):
    """One padding row when G == 0: gather on an empty set is undefined; a row with label
    -1 is never matched."""
    if gt_boxes.shape[0] == 0:
        gt_boxes = ops.zeros((1, 4), gt_boxes.dtype)
        gt_labels = -ops.ones((1,), gt_labels.dtype)
    return gt_boxes, gt_labels


def masked_iou(gt_boxes, gt_labels, boxes):
    """(G, X) IoU with the rows of padded ground truth (label <= 0) set to -1."""
    iou = pairwise_iou(gt_boxes, boxes)
    return ops.where((gt_labels > 0)[:, None], iou, -1.0)


def top_boxes(objectness, deltas, anchors, image_shape, *, coder, top_n, min_size=0.0, padding_anchors=False,
              score_threshold=0.0):
    """The `top_n` best-scoring anchors decoded, clipped and screened, before NMS.

    Returns boxes (N, k, 4) and scores (N, k) with k = min(top_n, M); boxes that are too
    small, centred on the canvas padding (unless `padding_anchors`, as torchvision keeps
    them) or whose objectness probability is below `score_threshold` get score -1e9 (below
    any NMS threshold used here) instead of a ragged removal.
    """
    objectness = ops.stop_gradient(ops.cast(objectness, "float32"))
    deltas = ops.stop_gradient(ops.cast(deltas, "float32"))
    if not padding_anchors:
        objectness = ops.where(anchor_centres_inside(anchors, image_shape), objectness, -1e9)
    num_anchors = anchors.shape[0]
    if num_anchors is None:  # TensorFlow with unknown feature sizes only: k follows at run time
        k = ops.minimum(int(top_n), ops.shape(anchors)[0])
    else:
        k = min(int(top_n), int(num_anchors))
    scores, index = ops.top_k(objectness, k=k)
    picked_deltas = ops.take_along_axis(deltas, index[..., None], axis=1)
    boxes = coder.decode(picked_deltas, ops.take(anchors, index, axis=0))
    height = ops.cast(image_shape[:, 0:1], boxes.dtype)
    width = ops.cast(image_shape[:, 1:2], boxes.dtype)
    boxes = clip_boxes(boxes, height, width)
    keep = ops.logical_and(small_box_mask(boxes, max(float(min_size), 1e-3)), scores > -1e8)
    if score_threshold > 0:
        keep = ops.logical_and(keep, ops.sigmoid(scores) >= float(score_threshold))
    return boxes, ops.where(keep, scores, -1e9)


def _nms_proposals(boxes, scores, nms_boxes, post_nms_top_n, nms_iou):
    keep_index, _ = nms_padded(nms_boxes, scores, int(post_nms_top_n), nms_iou, score_threshold=-1e8)
    valid = keep_index >= 0
    proposals = ops.take_along_axis(boxes, ops.maximum(keep_index, 0)[..., None], axis=1)
    return ops.where(valid[..., None], proposals, 0.0), valid


def generate_proposals(objectness, deltas, anchors, image_shape, *, coder, pre_nms_top_n, post_nms_top_n,
                       nms_iou, min_size=0.0, **screen):
    """Proposal layer: top-k by objectness, decode, clip, drop small boxes, NMS, top-k.

    Anchors centred on the canvas padding (outside `image_shape`) never become proposals
    (unless screen["padding_anchors"]; see top_boxes).

    Args:
      objectness: (N, M) logits; deltas: (N, M, 4); anchors: (M, 4) xyxy.
      image_shape: (N, 2) (height, width) of each image's content in the canvas.
    Returns:
      proposals (N, P, 4) xyxy (zeros in padding rows), valid (N, P) bool, with
      P = post_nms_top_n. Gradients do not flow into proposals (approximate joint training).
    """
    boxes, scores = top_boxes(objectness, deltas, anchors, image_shape, coder=coder, top_n=pre_nms_top_n,
                              min_size=min_size, **screen)
    return _nms_proposals(boxes, scores, boxes, post_nms_top_n, nms_iou)


def generate_proposals_multilevel(objectness, deltas, anchors, image_shape, *, coder, pre_nms_top_n,
                                  post_nms_top_n, nms_iou, min_size=0.0, **screen):
    """Proposal layer over pyramid levels, as detectron2's find_top_rpn_proposals:
    top `pre_nms_top_n` per level, decode, clip, drop small boxes, NMS within each level
    (batched NMS: boxes of level l are shifted by l times a span larger than any image,
    so boxes of different levels never overlap), then the best `post_nms_top_n` of all
    levels by score (the NMS output is in descending score order over all levels).

    Args: lists over levels of objectness (N, Ml), deltas (N, Ml, 4), anchors (Ml, 4);
      image_shape (N, 2); `screen`: padding_anchors, score_threshold of top_boxes.
      Returns proposals (N, P, 4) and valid (N, P), P = post_nms_top_n.
    """
    level_boxes, level_scores, shifted = [], [], []
    # Clipped boxes lie in [0, largest content side]: one more pixel separates the levels.
    span = ops.cast(ops.max(image_shape), "float32") + 1.0
    for level, (o, d, a) in enumerate(zip(objectness, deltas, anchors)):
        boxes, scores = top_boxes(o, d, a, image_shape, coder=coder, top_n=pre_nms_top_n, min_size=min_size,
                                  **screen)
        level_boxes.append(boxes)
        level_scores.append(scores)
        shifted.append(boxes + span * level)
    boxes = ops.concatenate(level_boxes, axis=1)
    return _nms_proposals(boxes, ops.concatenate(level_scores, axis=1), ops.concatenate(shifted, axis=1),
                          post_nms_top_n, nms_iou)


ANCHOR_RULES = ("centred", "torchvision")


def _map_size(features):
    height = features.shape[1] if features.shape[1] is not None else ops.shape(features)[1]
    width = features.shape[2] if features.shape[2] is not None else ops.shape(features)[2]
    return height, width


def _map_anchors(features, stride, sizes, ratios, rule="centred", canvas=None):
    """Anchors of one map. rule "torchvision": its AnchorGenerator, whose stride is the
    padded canvas side // the map's side per axis (a P6 of 13 cells on an 800-pixel canvas
    has stride 61, not 64) and whose cells are anchored at their top-left corners."""
    height, width = _map_size(features)
    if rule == "torchvision":
        strides = (canvas[0] // height, canvas[1] // width)
        return grid_anchors(height, width, strides, sizes, ratios, offset=0.0,
                            cells=torchvision_cell_anchors(sizes, ratios))
    return grid_anchors(height, width, stride, sizes, ratios)


@keras.saving.register_keras_serializable(package="detect")
class RegionProposalNetwork(keras.layers.Layer):
    """The RPN as one part: anchor generator, conv head, matcher, balanced sampler, box
    coder, target assignment, loss and proposal generation (Ren et al. 2015).

    call(features (N, Hf, Wf, C), image_shape (N, 2), training) -> dict
      objectness (N, M), deltas (N, M, 4), anchors (M, 4), proposals (N, P, 4),
      proposal_valid (N, P); P is post_nms_top_n_train when training else _test.
    loss(outputs, gt_boxes (N, G, 4), gt_labels (N, G), image_shape) -> (cls, box).
    Anchors follow the feature map's shape, so any canvas size works.

    Feature pyramid (FPN, Lin et al. 2017): with `strides` (one per level, finest first)
    `features` is a list of maps; level l has anchors of the one size anchor_sizes[l] x the
    ratios, the head is shared by all levels, and the outputs are the levels concatenated
    in order (M = sum of Ml), so targets and loss are those of one map. Proposals follow
    detectron2 (generate_proposals_multilevel): pre-NMS top-k per level, NMS per level,
    then the joint post-NMS top-k.
    """

    def __init__(self, *, anchor_sizes=(128, 256, 512), anchor_ratios=(0.5, 1.0, 2.0), stride=16, channels=512,
                 fg_iou=0.7, bg_iou=0.3, batch_size=256, positive_fraction=0.5, pre_nms_top_n_train=12000,
                 post_nms_top_n_train=2000, pre_nms_top_n_test=6000, post_nms_top_n_test=300, nms_iou=0.7,
                 min_size=0.0, ignore_border=True, loss_weight=1.0, strides=None, conv_depth=1, anchor_rule="centred",
                 shared_anchor_sizes=False, score_threshold=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.anchor_sizes = tuple(float(s) for s in anchor_sizes)
        self.strides = None if strides is None else tuple(int(s) for s in strides)
        if anchor_rule not in ANCHOR_RULES:
            raise ValueError(f"rpn anchor_rule must be one of {ANCHOR_RULES}, got {anchor_rule!r}")
        self.anchor_rule = anchor_rule
        self.shared_anchor_sizes = bool(shared_anchor_sizes)
        self.score_threshold = float(score_threshold)
        self.conv_depth = int(conv_depth)
        if self.strides is not None and not self.shared_anchor_sizes and len(self.strides) != len(self.anchor_sizes):
            raise ValueError(f"a feature pyramid of {len(self.strides)} levels takes one anchor size per level, "
                             f"got rpn.anchor_sizes {list(self.anchor_sizes)}")
        self.anchor_ratios = tuple(float(r) for r in anchor_ratios)
        self.stride = int(stride)
        self.channels = int(channels)
        self.fg_iou, self.bg_iou = float(fg_iou), float(bg_iou)
        self.batch_size = int(batch_size)
        self.positive_fraction = float(positive_fraction)
        self.pre_nms_top_n = {True: int(pre_nms_top_n_train), False: int(pre_nms_top_n_test)}
        self.post_nms_top_n = {True: int(post_nms_top_n_train), False: int(post_nms_top_n_test)}
        self.nms_iou = float(nms_iou)
        self.min_size = float(min_size)
        self.ignore_border = bool(ignore_border)
        self.loss_weight = float(loss_weight)
        sizes_per_cell = 1 if self.strides is not None and not self.shared_anchor_sizes else len(self.anchor_sizes)
        self.num_anchors = sizes_per_cell * len(self.anchor_ratios)
        self.head = RPNHead(self.num_anchors, self.channels, conv_depth=self.conv_depth, name="rpn_head")
        self.coder = BoxCoder()
        self.matcher = Matcher(self.fg_iou, self.bg_iou, allow_low_quality_matches=True)
        self.seed_generator = keras.random.SeedGenerator(seed, name="sampler_seed")

    def build(self, features_shape, image_shape=None):
        self.head.build(features_shape)

    @property
    def multilevel(self):
        return self.strides is not None

    def level_anchors(self, features):
        """Per pyramid level (Ml, 4) xyxy anchors of the list of maps `features`."""
        canvas = self._canvas(features[0], self.strides[0])
        # One size per level, or (shared_anchor_sizes) every size on every level.
        sizes = [self.anchor_sizes] * len(self.strides) if self.shared_anchor_sizes else [
            (size,) for size in self.anchor_sizes]
        return [_map_anchors(f, stride, level_sizes, self.anchor_ratios, self.anchor_rule, canvas)
                for f, stride, level_sizes in zip(features, self.strides, sizes)]

    @staticmethod
    def _canvas(features, stride):
        """The padded canvas (height, width) of the finest map (exact on canvases that are
        multiples of the coarsest stride, as every pipeline canvas is)."""
        height, width = _map_size(features)
        return height * stride, width * stride

    def anchors(self, features):
        """(M, 4) xyxy canvas-pixel anchors of a (N, Hf, Wf, C) feature map (a list of
        maps: the levels' anchors concatenated)."""
        if self.multilevel:
            return ops.concatenate(self.level_anchors(features), axis=0)
        return _map_anchors(features, self.stride, self.anchor_sizes, self.anchor_ratios, self.anchor_rule,
                            self._canvas(features, self.stride))

    @property
    def _screen(self):
        return {"padding_anchors": self.anchor_rule == "torchvision", "score_threshold": self.score_threshold}

    def propose(self, objectness, deltas, anchors, image_shape, training=False):
        """The proposal layer with the training (True) or test (False) top-n counts."""
        return generate_proposals(
            objectness, deltas, anchors, image_shape, coder=self.coder,
            pre_nms_top_n=self.pre_nms_top_n[bool(training)], post_nms_top_n=self.post_nms_top_n[bool(training)],
            nms_iou=self.nms_iou, min_size=self.min_size, **self._screen,
        )

    def call(self, features, image_shape, training=False):
        if self.multilevel:
            return self._call_levels(features, image_shape, training)
        objectness, deltas = self.head(features)
        # Under mixed precision the head computes in float16; box arithmetic stays float32.
        objectness, deltas = ops.cast(objectness, "float32"), ops.cast(deltas, "float32")
        anchors = self.anchors(features)
        proposals, valid = self.propose(objectness, deltas, anchors, image_shape, training)
        return {"objectness": objectness, "deltas": deltas, "anchors": anchors,
                "proposals": proposals, "proposal_valid": valid}

    def _call_levels(self, features, image_shape, training):
        features = list(features)[: len(self.strides)]
        heads = [self.head(f) for f in features]
        objectness = [ops.cast(o, "float32") for o, _ in heads]
        deltas = [ops.cast(d, "float32") for _, d in heads]
        anchors = self.level_anchors(features)
        proposals, valid = generate_proposals_multilevel(
            objectness, deltas, anchors, image_shape, coder=self.coder,
            pre_nms_top_n=self.pre_nms_top_n[bool(training)], post_nms_top_n=self.post_nms_top_n[bool(training)],
            nms_iou=self.nms_iou, min_size=self.min_size, **self._screen,
        )
        return {"objectness": ops.concatenate(objectness, axis=1), "deltas": ops.concatenate(deltas, axis=1),
                "anchors": ops.concatenate(anchors, axis=0), "proposals": proposals, "proposal_valid": valid}

    def targets(self, anchors, gt_boxes, gt_labels, image_shape):
        """rpn_targets over a batch: gt (N, G, 4) / (N, G), image_shape (N, 2) ->
        labels (N, M), target_deltas (N, M, 4)."""
        gt_labels = ops.cast(gt_labels, "int32")
        # The sampler's keys for the whole batch, drawn outside the per-image map (a seed
        # generator cannot advance inside a traced loop on JAX).
        keys = keras.random.uniform((ops.shape(gt_labels)[0], ops.shape(anchors)[0]), seed=self.seed_generator)

        def one(args):
            return rpn_targets(anchors, args[0], args[1], args[2], matcher=self.matcher, coder=self.coder,
                               num_samples=self.batch_size, positive_fraction=self.positive_fraction,
                               ignore_border=self.ignore_border, keys=args[3])

        return ops.map(one, (ops.cast(gt_boxes, "float32"), gt_labels, image_shape, keys))

    def loss(self, outputs, gt_boxes, gt_labels, image_shape):
        """(objectness loss, box loss) of `call` outputs against the ground truth."""
        labels, target_deltas = self.targets(outputs["anchors"], gt_boxes, gt_labels, image_shape)
        return rpn_losses(outputs["objectness"], outputs["deltas"], labels, target_deltas)

    def get_config(self):
        return {
            **super().get_config(),
            "anchor_sizes": list(self.anchor_sizes), "anchor_ratios": list(self.anchor_ratios),
            "stride": self.stride, "channels": self.channels, "fg_iou": self.fg_iou, "bg_iou": self.bg_iou,
            "batch_size": self.batch_size, "positive_fraction": self.positive_fraction,
            "pre_nms_top_n_train": self.pre_nms_top_n[True], "post_nms_top_n_train": self.post_nms_top_n[True],
            "pre_nms_top_n_test": self.pre_nms_top_n[False], "post_nms_top_n_test": self.post_nms_top_n[False],
            "nms_iou": self.nms_iou, "min_size": self.min_size, "ignore_border": self.ignore_border,
            "loss_weight": self.loss_weight, "strides": None if self.strides is None else list(self.strides),
            "conv_depth": self.conv_depth, "anchor_rule": self.anchor_rule,
            "shared_anchor_sizes": self.shared_anchor_sizes, "score_threshold": self.score_threshold,
        }
