"""Distillation: the transfer model labels the unused faces, the scratch CNN learns from them."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
