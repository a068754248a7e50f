"""Predict age and gender for the faces in ordinary photos."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
