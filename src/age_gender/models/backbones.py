"""ImageNet backbones by name, each with its own preprocessing, and where their weights come from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras


@dataclass(frozen=True)
class BackboneSpec:
    constructor: str      # attribute of keras.applications
    preprocess: str       # BackbonePreprocess mode
    min_size: int         # smallest input keras.applications accepts
    local_file: str | None = None  # file name of a no-top weights file, when one is known


BACKBONES: dict[str, BackboneSpec] = {
    "mobilenet_v2": BackboneSpec("MobileNetV2", "tf", 32, "mobilenet_v2_1.0_imagenet_notop.weights.h5"),
    "mobilenet": BackboneSpec("MobileNet", "tf", 32, "mobilenet_v1_1.0_imagenet_notop.weights.h5"),
    "xception": BackboneSpec("Xception", "tf", 71, "xception_imagenet_notop.weights.h5"),
    "vgg16": BackboneSpec("VGG16", "caffe", 32),
    "vgg19": BackboneSpec("VGG19", "caffe", 32),
    "resnet50_v2": BackboneSpec("ResNet50V2", "tf", 32),
    "efficientnet_b4": BackboneSpec("EfficientNetB4", "none", 32),
    "inception_v3": BackboneSpec("InceptionV3", "tf", 75),
}


class WeightsUnavailable(RuntimeError):
    """Raised when a backbone's pretrained weights cannot be had and random init is not allowed."""


def _spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}; known: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name]


def resolve_weights(name: str, weights: str | None, allow_random_init: bool) -> tuple[str | None, bool]:
    """What to pass to ``keras.applications`` as ``weights`` and whether that is pretrained.

    ``weights`` is ``"imagenet"`` (Keras downloads, needs internet), a path to a local no-top
    weights file, or ``"random"``/``None``. Random weights need ``allow_random_init`` and are then
    reported as not pretrained; a missing local file is a clear error, never a silent fallback.
    """
    _spec(name)
    if weights in (None, "random", "none"):
        if not allow_random_init:
            raise WeightsUnavailable(
                f"Backbone {name!r} has no pretrained weights configured. Set "
                f"transfer.backbone_weights.{name} to 'imagenet' or a local .weights.h5 file, or "
                f"allow random initialisation with transfer.allow_random_init: true (reported as "
                f"not pretrained).")
        return None, False
    if weights == "imagenet":
        return "imagenet", True
    path = Path(weights)
    if path.is_file():
        return str(path), True
    if allow_random_init:
        return None, False
    raise WeightsUnavailable(
        f"Weights file for backbone {name!r} not found at '{path.resolve()}'. Point "
        f"transfer.backbone_weights.{name} (or UTKFACE_WEIGHTS_DIR) at it, use 'imagenet' on a "
        f"machine with internet, or set transfer.allow_random_init: true.")


def build_backbone(name: str, input_size: int, weights: str | None) -> keras.Model:
    """``keras.applications`` backbone without its top, at ``input_size``, with ``weights``
    (a value from ``resolve_weights``). Download failures become ``WeightsUnavailable``."""
    spec = _spec(name)
    if input_size < spec.min_size:
        raise ValueError(f"{name} needs an input of at least {spec.min_size} px, got {input_size}")
    constructor = getattr(keras.applications, spec.constructor)
    try:
        return constructor(include_top=False, weights=weights, input_shape=(input_size, input_size, 3))
    except Exception as error:
        if weights == "imagenet":
            raise WeightsUnavailable(
                f"Could not fetch ImageNet weights for {name!r} ({type(error).__name__}: {error}). "
                f"Without internet, point transfer.backbone_weights.{name} at a local file or set "
                f"transfer.allow_random_init: true.") from error
        raise


def unfreeze_last(backbone: keras.Model, count: int) -> list[str]:
    """Make the last ``count`` weighted layers of ``backbone`` trainable, every other layer (and
    every batch norm) frozen, for fine-tuning. Returns the names of the layers unfrozen."""
    if count < 0:
        raise ValueError(f"unfreeze_last must be >= 0, got {count}")
    backbone.trainable = True
    for layer in backbone.layers:
        layer.trainable = False
    weighted = [layer for layer in backbone.layers
                if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)]
    chosen = weighted[-count:] if count else []
    for layer in chosen:
        layer.trainable = True
    return [layer.name for layer in chosen]
