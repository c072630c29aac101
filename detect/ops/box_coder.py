"""BoxCoder: boxes <-> regression deltas relative to anchors (or proposals).

Deltas follow the R-CNN parameterisation `[dx, dy, dw, dh]`:

    dx = wx * (gcx - acx) / aw      dw = ww * log(gw / aw)
    dy = wy * (gcy - acy) / ah      dh = wh * log(gh / ah)

with width = x2 - x1 and centre = x1 + 0.5 * width (continuous pixels, no +1).
"""

import math

from keras import ops

from detect.ops.boxes import as_boxes

# Degenerate widths are raised to this many pixels before dividing or taking logs, so
# that padding rows (box 0) encode to finite values that a mask can then ignore.
_MIN_SIZE = 1e-6


def _centres_sizes(boxes):
    widths = boxes[..., 2] - boxes[..., 0]
    heights = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * widths, boxes[..., 1] + 0.5 * heights, widths, heights


class BoxCoder:
    """Encodes boxes as deltas against reference boxes and decodes them back.

    Args:
        weights: (wx, wy, ww, wh) multipliers of the deltas; Fast R-CNN heads commonly
            use (10, 10, 5, 5), RPNs (1, 1, 1, 1).
        scale_clamp: upper bound on dw / dh (after dividing by the weights) before
            `exp` in `decode`, so a wild prediction grows a box at most
            exp(scale_clamp) = 1000 / 16 times by default.
    """

    def __init__(self, weights=(1.0, 1.0, 1.0, 1.0), scale_clamp=math.log(1000.0 / 16)):
        if len(weights) != 4:
            raise ValueError(f"BoxCoder weights must have 4 values, got {weights!r}")
        self.weights = tuple(float(w) for w in weights)
        self.scale_clamp = float(scale_clamp)

    def encode(self, boxes, anchors):
        """Deltas (..., 4) [dx, dy, dw, dh] that turn `anchors` into `boxes`.

        Args:
            boxes: (..., 4) xyxy target boxes.
            anchors: (..., 4) xyxy reference boxes, broadcastable against `boxes`.
        """
        boxes = as_boxes(boxes)
        anchors = as_boxes(anchors)
        wx, wy, ww, wh = self.weights
        gcx, gcy, gw, gh = _centres_sizes(boxes)
        acx, acy, aw, ah = _centres_sizes(anchors)
        gw, gh = ops.maximum(gw, _MIN_SIZE), ops.maximum(gh, _MIN_SIZE)
        aw, ah = ops.maximum(aw, _MIN_SIZE), ops.maximum(ah, _MIN_SIZE)
        return ops.stack(
            [
                wx * (gcx - acx) / aw,
                wy * (gcy - acy) / ah,
                ww * ops.log(gw / aw),
                wh * ops.log(gh / ah),
            ],
            axis=-1,
        )

    def decode(self, deltas, anchors):
        """Boxes (..., 4) xyxy obtained by applying `deltas` to `anchors`.

        Args:
            deltas: (..., 4) [dx, dy, dw, dh], any float dtype (computed in float32).
            anchors: (..., 4) xyxy reference boxes, broadcastable against `deltas`.
        """
        deltas = as_boxes(deltas)
        anchors = as_boxes(anchors)
        wx, wy, ww, wh = self.weights
        acx, acy, aw, ah = _centres_sizes(anchors)
        dx = deltas[..., 0] / wx
        dy = deltas[..., 1] / wy
        dw = ops.minimum(deltas[..., 2] / ww, self.scale_clamp)
        dh = ops.minimum(deltas[..., 3] / wh, self.scale_clamp)
        cx = dx * aw + acx
        cy = dy * ah + acy
        half_w = 0.5 * ops.exp(dw) * aw
        half_h = 0.5 * ops.exp(dh) * ah
        return ops.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=-1)
