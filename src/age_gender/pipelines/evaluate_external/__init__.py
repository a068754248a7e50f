"""Evaluate trained models on another UTKFace-named dataset, chosen by the catalog alone."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
