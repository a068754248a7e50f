"""Seeded, stratified, non-overlapping train / val-1 / val-2 / test splits."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
