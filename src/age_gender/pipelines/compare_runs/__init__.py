"""The tracked MLflow runs side by side: a table and a plot of models with their metrics and intervals."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
