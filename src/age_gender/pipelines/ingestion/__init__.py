"""UTKFace ingestion and cleaning: labels, decoding, duplicates, non-face check, caches."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
