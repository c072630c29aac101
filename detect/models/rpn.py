"""Region Proposal Network: head layer and proposal generation.

Shape shorthand: N images, Hf x Wf feature cells, A anchors per cell, M = Hf * Wf * A
anchors, P proposals per image. Anchors are ordered cell-major (row, column), then the A
cell anchors (detect.ops.anchors.grid_anchors), which is the order a (N, Hf, Wf, A) conv
output has after reshaping to (N, M).
"""

import keras
import tensorflow as tf

from detect.ops.boxes import clip_boxes, small_box_mask
from detect.ops.nms import nms_padded


@keras.saving.register_keras_serializable(package="detect")
class RPNHead(keras.layers.Layer):
    """3x3 conv + ReLU, then 1x1 convs for A objectness logits and 4A deltas per cell.

    call(features (N, Hf, Wf, C)) -> (objectness (N, M), deltas (N, M, 4)).
    """

    def __init__(self, num_anchors, channels=512, **kwargs):
        super().__init__(**kwargs)
        self.num_anchors = int(num_anchors)
        self.channels = int(channels)
        init = keras.initializers.RandomNormal(stddev=0.01)
        self.conv = keras.layers.Conv2D(
            self.channels, 3, padding="same", activation="relu", kernel_initializer=init, name="conv"
        )
        self.objectness = keras.layers.Conv2D(self.num_anchors, 1, kernel_initializer=init, name="objectness")
        self.deltas = keras.layers.Conv2D(4 * self.num_anchors, 1, kernel_initializer=init, name="deltas")

    def build(self, input_shape):
        self.conv.build(input_shape)
        hidden = tuple(input_shape[:-1]) + (self.channels,)
        self.objectness.build(hidden)
        self.deltas.build(hidden)

    def call(self, features):
        x = self.conv(features)
        n = tf.shape(features)[0]
        objectness = tf.reshape(self.objectness(x), [n, -1])
        deltas = tf.reshape(self.deltas(x), [n, -1, 4])
        return objectness, deltas

    def get_config(self):
        return {**super().get_config(), "num_anchors": self.num_anchors, "channels": self.channels}


def generate_proposals(
    objectness,
    deltas,
    anchors,
    image_shape,
    *,
    coder,
    pre_nms_top_n,
    post_nms_top_n,
    nms_iou,
    min_size=0.0,
):
    """Proposal layer: top-k by objectness, decode, clip, drop small boxes, NMS, top-k.

    Args:
      objectness: (N, M) logits; deltas: (N, M, 4); anchors: (M, 4) xyxy.
      image_shape: (N, 2) (height, width) of each image's content in the canvas.
    Returns:
      proposals (N, P, 4) xyxy (zeros in padding rows), valid (N, P) bool, with
      P = post_nms_top_n. Gradients do not flow into proposals (approximate joint training).
    """
    objectness = tf.stop_gradient(objectness)
    deltas = tf.stop_gradient(deltas)
    num_anchors = anchors.shape[0]
    k = min(int(pre_nms_top_n), int(num_anchors))
    scores, index = tf.math.top_k(objectness, k=k)
    boxes = coder.decode(tf.gather(deltas, index, batch_dims=1), tf.gather(anchors, index))
    height = tf.cast(image_shape[:, 0:1], boxes.dtype)
    width = tf.cast(image_shape[:, 1:2], boxes.dtype)
    boxes = clip_boxes(boxes, height, width)
    keep = small_box_mask(boxes, max(float(min_size), 1e-3))
    # Dropped boxes get a score below the NMS threshold instead of a ragged removal.
    scores = tf.where(keep, scores, -1e9)
    keep_index, _ = nms_padded(boxes, scores, int(post_nms_top_n), nms_iou, score_threshold=-1e8)
    valid = keep_index >= 0
    proposals = tf.gather(boxes, tf.maximum(keep_index, 0), batch_dims=1)
    proposals = tf.where(valid[..., None], proposals, 0.0)
    return proposals, valid
