"""Metrics the project compiles into its models (registered serialisable, like the layers)."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="age_gender")
class HardTargetBinaryAccuracy(keras.metrics.BinaryAccuracy):
    """Binary accuracy against targets rounded at ``threshold``: for soft targets (a teacher's
    probability of 'female', float in [0, 1], shape (B, 1)). Keras' ``BinaryAccuracy`` compares
    ``y_true == (y_pred > threshold)`` exactly, so a soft target such as 0.93 never counts as
    right; here it counts as right when the prediction falls on the same side of the threshold.
    Equal to ``BinaryAccuracy`` on hard 0/1 targets."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = keras.ops.cast(keras.ops.greater(keras.ops.convert_to_tensor(y_true), self.threshold), "float32")
        return super().update_state(y_true, y_pred, sample_weight=sample_weight)
