"""Optimizers, built from the `training` config section.

`sgd` is Caffe's SGD as the R-CNN papers trained with it: L2 weight decay is part of the
gradient, before momentum,

    g' = g + wd * w          (kernels only)
    v  = momentum * v - lr * g'
    w  = w + v

and applies to kernels only: biases, BatchNorm gamma/beta and every other variable are not
decayed (py-faster-rcnn sets decay_mult 0 on biases; torchvision / detectron2 leave norm
layers undecayed). keras.optimizers.SGD(weight_decay=wd) instead shrinks w by lr * wd * w
outside the momentum buffer, which with momentum 0.9 is ~10x weaker at steady state, and
decays biases too. With wd = 0 the two are the same update.
"""

import keras
from keras import ops

from detect.compat import fused_keras_momentum
from detect.errors import DetectError

# Variable names (the last part of `variable.path`) that decay.
DECAYED_NAMES = ("kernel", "depthwise_kernel", "pointwise_kernel")

# Variables AdamW does not decay (matched anywhere in `variable.path`).
_ADAMW_EXCLUDED = ["bias", "gamma", "beta"]


def decays(variable):
    """True for the variables L2 decay applies to: convolution and Dense kernels.

    Works on Keras variables (name "kernel") and on the backend variables the TensorFlow
    backend passes to `update_step` (name "dense/kernel:0").
    """
    return variable.name.split("/")[-1].split(":")[0] in DECAYED_NAMES


@keras.saving.register_keras_serializable(package="detect")
class CaffeSGD(keras.optimizers.SGD):
    """SGD with momentum and Caffe's L2 weight decay (`l2`) on kernels only; see module doc.

    The momentum update runs as one fused TF kernel where it can (detect.compat
    fused_keras_momentum: half the time of Keras' five element-wise passes on VGG16's fc6).

    Args:
      l2: decay coefficient wd added as wd * w to the gradients of kernels.
      other arguments: those of keras.optimizers.SGD (its own `weight_decay` must be unset).
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, l2=0.0, **kwargs):
        if kwargs.get("weight_decay"):
            raise ValueError("CaffeSGD applies `l2` itself; leave SGD's decoupled `weight_decay` unset")
        super().__init__(learning_rate=learning_rate, momentum=momentum, **kwargs)
        self.l2 = float(l2)

    def update_step(self, gradient, variable, learning_rate):
        # Called after gradient clipping, so, as in Caffe, decay is not clipped.
        if self.l2 and decays(variable):
            gradient = ops.add(ops.cast(gradient, variable.dtype), ops.multiply(ops.cast(self.l2, variable.dtype), variable))
        if self.momentum:
            accumulator = self.momentums[self._get_variable_index(variable)]
            if fused_keras_momentum(variable, accumulator, learning_rate, gradient, self.momentum, self.nesterov):
                return
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "l2": self.l2}


def build_optimizer(training):
    """The optimizer the `training` config section asks for.

    Keys: optimizer (sgd | adam | adamw), learning_rate, momentum (sgd), weight_decay
    (sgd: Caffe L2 on kernels; adamw: decoupled decay, not on biases and norm parameters;
    adam: unused), clipnorm (None or > 0).
    """
    kwargs = {"learning_rate": training["learning_rate"]}
    if training.get("clipnorm"):
        kwargs["clipnorm"] = training["clipnorm"]
    name = training["optimizer"]
    weight_decay = training.get("weight_decay") or 0.0
    if name == "sgd":
        return CaffeSGD(momentum=training.get("momentum", 0.0), l2=weight_decay, **kwargs)
    if name == "adamw":
        optimizer = keras.optimizers.AdamW(weight_decay=weight_decay, **kwargs)
        optimizer.exclude_from_weight_decay(var_names=_ADAMW_EXCLUDED)
        return optimizer
    if name == "adam":
        return keras.optimizers.Adam(**kwargs)
    raise DetectError(f"training.optimizer: unknown optimizer {name!r} (sgd, adam, adamw)")
