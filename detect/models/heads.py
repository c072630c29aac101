"""Box predictor of the detection head: class logits and class-specific box deltas.

Shape shorthand: X RoI feature vectors (all images' RoIs flattened), D feature width,
K classes (background is class 0 of the logits, not of the deltas).
"""

import keras


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
