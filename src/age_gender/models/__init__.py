"""Model builders: the study's two-headed CNN family, cross-stitch units, ImageNet backbones with
two-headed tops. Importing this package registers the custom layers for ``load_model``."""

from .backbones import BACKBONES, BackboneSpec, build_backbone, resolve_weights, unfreeze_last
from .cnn import build_multitask_cnn, conv_filters
from .heads import HEAD_STRUCTURES, build_transfer_model, build_two_headed_top
from .layers import BackbonePreprocess, CrossStitch, RandomAffine
from .metrics import AgeHuber, HardTargetBinaryAccuracy

__all__ = [
    "BACKBONES", "BackboneSpec", "BackbonePreprocess", "CrossStitch", "HEAD_STRUCTURES",
    "build_backbone", "build_multitask_cnn", "build_transfer_model", "build_two_headed_top",
    "conv_filters", "resolve_weights", "unfreeze_last", "AgeHuber",
    "HardTargetBinaryAccuracy", "RandomAffine",
]
