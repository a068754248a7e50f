"""Final CNN from scratch: retrain the chosen architecture on train+val1, test once."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
