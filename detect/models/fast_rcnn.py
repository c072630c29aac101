"""Fast R-CNN: the Faster R-CNN network without its RPN; RoIs come from outside
(selective-search proposals, see detect.proposals), one CNN pass per image.

Inputs add proposals (N, P, 4) xyxy canvas pixels (zero rows = padding) to the
Faster R-CNN inputs; everything from RoI pooling on is shared with FasterRCNN.
"""

import keras

from detect.models.faster_rcnn import FasterRCNN


@keras.saving.register_keras_serializable(package="detect")
class FastRCNN(FasterRCNN):
    """FasterRCNN with use_rpn=False; RPN-only arguments are ignored."""

    def __init__(self, **kwargs):
        kwargs["use_rpn"] = False
        kwargs["stage"] = "joint"
        super().__init__(**kwargs)
