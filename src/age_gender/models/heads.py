"""Two-headed tops for pooled backbone features, and the full transfer model around them."""

from __future__ import annotations

import keras
from keras import layers

from .backbones import BACKBONES
from .cnn import age_gender_outputs
from .layers import BackbonePreprocess

# The study's Table 4 orderings of the top (each branch), by name.
HEAD_STRUCTURES: dict[str, tuple[str, ...]] = {
    "dense-dense-dropout": ("dense", "dense", "dropout"),
    "dense-bn-dropout": ("dense", "bn", "dropout"),
    "bn-dense-dropout": ("bn", "dense", "dropout"),
    "dense-dropout-bn": ("dense", "dropout", "bn"),
    "dense-dropout-bn-dropout": ("dense", "dropout", "bn", "dropout"),
    "dense-bn": ("dense", "bn"),
    "dense-dropout": ("dense", "dropout"),
}


def _branch(x, structure: tuple[str, ...], units: int, dropout: float, l2: float, prefix: str):
    for i, kind in enumerate(structure):
        name = f"{prefix}_{kind}{i + 1}"
        if kind == "dense":
            x = layers.Dense(units, activation="relu", name=name,
                             kernel_regularizer=keras.regularizers.L2(l2) if l2 else None)(x)
        elif kind == "bn":
            x = layers.BatchNormalization(name=name)(x)
        elif kind == "dropout":
            x = layers.Dropout(dropout, name=name)(x)
        else:
            raise ValueError(f"Unknown head layer {kind!r}; use dense, bn or dropout")
    return x


def build_two_headed_top(feature_dim: int, structure: str = "dense-dropout", units: int = 256,
                         dropout: float = 0.3, l2: float = 1e-5, age_mean: float = 33.0,
                         age_std: float = 20.0, age_head: str = "regression",
                         variance_weight: float = 0.0) -> keras.Model:
    """A top that splits at the start of its dense layers into an age and a gender branch
    (``age_head``, ``variance_weight``: see ``cnn.age_gender_outputs``)."""
    if structure not in HEAD_STRUCTURES:
        raise ValueError(f"Unknown head structure {structure!r}; known: {', '.join(HEAD_STRUCTURES)}")
    features = keras.Input(shape=(feature_dim,), name="features")
    parts = HEAD_STRUCTURES[structure]
    a = _branch(features, parts, units, dropout, l2, "age")
    g = _branch(features, parts, units, dropout, l2, "gender")
    return keras.Model(features, age_gender_outputs(a, g, age_mean, age_std, age_head, variance_weight), name="top")


def build_feature_extractor(backbone_name: str, backbone: keras.Model, input_size: int) -> keras.Model:
    """Image (RGB 0-255) -> the backbone's own preprocessing -> backbone -> pooled features.

    The backbone runs with ``training=False``: its batch norm stays in inference mode even when
    layers are unfrozen for fine-tuning.
    """
    images = keras.Input(shape=(input_size, input_size, 3), name="image")
    x = BackbonePreprocess(BACKBONES[backbone_name].preprocess, name="preprocess")(images)
    x = backbone(x, training=False)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(images, x, name="features")


def build_transfer_model(feature_extractor: keras.Model, top: keras.Model,
                         augmentation: keras.Model | None = None) -> keras.Model:
    """Image -> (augmentation, training only) -> features -> two-headed top."""
    images = keras.Input(shape=feature_extractor.input_shape[1:], name="image")
    x = augmentation(images) if augmentation is not None else images
    return keras.Model(images, top(feature_extractor(x)), name="transfer")
