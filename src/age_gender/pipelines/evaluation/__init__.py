"""Evaluation and reporting: full metrics per model and per group, plots, comparison with the study."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
