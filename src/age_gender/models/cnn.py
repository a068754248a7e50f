"""The study's family of two-headed CNNs, built from explicit arguments."""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from .layers import AgeExpectation, CrossStitch

STUDY_FILTERS = (64, 128, 256, 512)
# Faster-moving batch-norm statistics than Keras's 0.99: with a few hundred steps per run the
# inference-mode statistics must settle within the first epochs, or validation is meaningless.
BN_MOMENTUM = 0.9


def conv_filters(conv_pairs: int, width_multiplier: float = 1.0) -> list[int]:
    """Filters per conv pair: 64, 128, 256, 512, then 512 for every pair after (scaled)."""
    full = [STUDY_FILTERS[i] if i < len(STUDY_FILTERS) else 512 for i in range(conv_pairs)]
    return [max(8, int(round(f * width_multiplier))) for f in full]


def _conv_pair(x, filters: int, batch_norm: bool, name: str, dtype):
    for k in (1, 2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=not batch_norm,
                          name=f"{name}_conv{k}", dtype=dtype)(x)
        if batch_norm:
            x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn{k}", dtype=dtype)(x)
        x = layers.Activation("relu", name=f"{name}_relu{k}", dtype=dtype)(x)
    return layers.MaxPooling2D(2, name=f"{name}_pool", dtype=dtype)(x)


def _dense(x, units: int, batch_norm: bool, l2: float, dropout: float, name: str, dtype):
    x = layers.Dense(units, use_bias=not batch_norm, name=name, dtype=dtype,
                     kernel_regularizer=keras.regularizers.L2(l2) if l2 else None)(x)
    if batch_norm:
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn", dtype=dtype)(x)
    x = layers.Activation("relu", name=f"{name}_relu", dtype=dtype)(x)
    if dropout:
        x = layers.Dropout(dropout, name=f"{name}_dropout", dtype=dtype)(x)
    return x


AGE_HEADS = ("regression", "distribution")
MAX_AGE = 116  # UTKFace's oldest label; the distribution head's last bin


def age_gender_outputs(age_features, gender_features, age_mean: float, age_std: float,
                       age_head: str = "regression", variance_weight: float = 0.0):
    """The two heads: a sigmoid for gender and an age in years.

    ``age_head="regression"``: one linear unit learns a standardised age; a fixed ``Rescaling``
    maps it to years, so training starts at the mean age instead of 0. ``"distribution"``: a
    softmax over the whole ages 0..116 whose expectation is the age (``AgeExpectation``; with
    ``variance_weight`` its variance is penalised, mean-variance loss); its bias starts as a
    Gaussian around ``age_mean`` with ``age_std``, so training starts at the mean age too. Either
    way the saved model's ``age`` output is (B, 1) float32 years.
    """
    gender = layers.Dense(1, activation="sigmoid", name="gender", dtype="float32")(gender_features)
    if age_head == "regression":
        age = layers.Dense(1, name="age_standardised", dtype="float32")(age_features)
        age = layers.Rescaling(scale=float(age_std), offset=float(age_mean), name="age",
                               dtype="float32")(age)
    elif age_head == "distribution":
        prior = -0.5 * ((np.arange(MAX_AGE + 1) - float(age_mean)) / max(float(age_std), 1.0)) ** 2
        logits = layers.Dense(MAX_AGE + 1, name="age_logits", dtype="float32",
                              kernel_initializer=keras.initializers.GlorotUniform(),
                              bias_initializer=keras.initializers.Constant(prior))(age_features)
        probabilities = layers.Softmax(name="age_distribution", dtype="float32")(logits)
        age = AgeExpectation(MAX_AGE, variance_weight, name="age", dtype="float32")(probabilities)
    else:
        raise ValueError(f"age_head must be one of {AGE_HEADS}, got {age_head!r}")
    return {"age": age, "gender": gender}


def build_multitask_cnn(
    input_size: int = 128,
    conv_pairs: int = 5,
    dense_layers: int = 3,
    dense_units: int = 300,
    split_point: int = 1,
    width_multiplier: float = 1.0,
    batch_norm: bool = True,
    l2: float = 1e-5,
    dropout: float = 0.2,
    cross_stitch: str = "none",
    pooling: str = "flatten",
    age_mean: float = 33.0,
    age_std: float = 20.0,
    dtype: str | None = None,
    name: str = "multitask_cnn",
    augmentation: keras.Layer | None = None,
    age_head: str = "regression",
    variance_weight: float = 0.0,
) -> keras.Model:
    """A two-headed CNN: ``split_point`` shared conv pairs, then an age and a gender branch.

    Each conv pair is two 3x3 convolutions and a 2x2 max pooling; each branch ends in
    ``dense_layers`` dense layers of ``dense_units`` (L2, batch norm, dropout). ``cross_stitch``
    puts cross-stitch units between the branches after each branch conv pair (``"conv"``),
    after each dense layer (``"dense"``), or both (``"both"``). Input: (B, S, S, 3) RGB 0-255,
    uint8 or float (cast to float32 on entry). ``augmentation`` (e.g. ``training.augmentation``)
    runs first, in training only, on the model's device and inside its compiled step.
    """
    if not 1 <= conv_pairs <= 8:
        raise ValueError(f"conv_pairs must be in 1..8, got {conv_pairs}")
    if not 0 <= split_point <= conv_pairs:
        raise ValueError(f"split_point must be in 0..conv_pairs ({conv_pairs}), got {split_point}")
    if input_size < 2 ** conv_pairs:
        raise ValueError(f"input_size {input_size} is too small for {conv_pairs} poolings")
    if cross_stitch not in ("none", "conv", "dense", "both"):
        raise ValueError(f"cross_stitch must be none, conv, dense or both, got {cross_stitch!r}")
    if pooling not in ("flatten", "avg"):
        raise ValueError(f"pooling must be 'flatten' or 'avg', got {pooling!r}")
    if dense_layers < 0 or dense_units < 1:
        raise ValueError("dense_layers must be >= 0 and dense_units >= 1")

    filters = conv_filters(conv_pairs, width_multiplier)
    inputs = keras.Input(shape=(input_size, input_size, 3), name="image")
    x = augmentation(inputs) if augmentation is not None else inputs
    x = layers.Rescaling(1.0 / 255, name="scale_0_1", dtype=dtype)(x)
    for i in range(split_point):
        x = _conv_pair(x, filters[i], batch_norm, f"shared{i + 1}", dtype)
    a, g = x, x
    stitch_conv = cross_stitch in ("conv", "both")
    stitch_dense = cross_stitch in ("dense", "both")
    for i in range(split_point, conv_pairs):
        a = _conv_pair(a, filters[i], batch_norm, f"age{i + 1}", dtype)
        g = _conv_pair(g, filters[i], batch_norm, f"gender{i + 1}", dtype)
        if stitch_conv:
            a, g = CrossStitch(name=f"stitch_conv{i + 1}", dtype=dtype)([a, g])
    flatten = (lambda n: layers.Flatten(name=n, dtype=dtype)) if pooling == "flatten" else \
        (lambda n: layers.GlobalAveragePooling2D(name=n, dtype=dtype))
    if split_point == conv_pairs:
        a = g = flatten("features")(a)
    else:
        a, g = flatten("age_features")(a), flatten("gender_features")(g)
    for j in range(dense_layers):
        a = _dense(a, dense_units, batch_norm, l2, dropout, f"age_dense{j + 1}", dtype)
        g = _dense(g, dense_units, batch_norm, l2, dropout, f"gender_dense{j + 1}", dtype)
        if stitch_dense:
            a, g = CrossStitch(name=f"stitch_dense{j + 1}", dtype=dtype)([a, g])
    return keras.Model(inputs, age_gender_outputs(a, g, age_mean, age_std, age_head, variance_weight), name=name)
